package flightrec

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/safedir"
)

// lock takes an exclusive, non-blocking flock on name in d (created if needed; something that is
// not gwrap's own regular file there is safedir.ErrRefused). It returns the open file holding the
// lock, or busy=true when another live process holds it. A file system without flock (some
// network shares) gives (nil, false, nil): the host name alone then keeps records apart.
func lock(d *safedir.Dir, name string) (f *os.File, busy bool, err error) {
	f, _, err = d.OpenOwn(name, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, false, err
	}
	switch err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); {
	case err == nil:
		return f, false, nil
	case errors.Is(err, unix.EWOULDBLOCK):
		f.Close()
		return nil, true, nil
	default:
		f.Close()
		return nil, false, nil
	}
}
