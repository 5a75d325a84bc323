package inflight

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNoFile says the worker made no request file: it did not load gwrap's hook, is not a
// Gunicorn worker, or could not write gwrap's private directory.
var ErrNoFile = errors.New("no request file")

// ReadFile reads the request file at path (DIR/<pid>.req), opened without following a link or
// blocking, only when it is a regular file, and read as Read reads.
func ReadFile(path string, mode QueryMode) (Table, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return Table{}, fmt.Errorf("inflight: %s: %w", path, ErrNoFile)
		}
		return Table{}, fmt.Errorf("inflight: open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Table{}, fmt.Errorf("inflight: stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return Table{}, fmt.Errorf("inflight: %s is not a regular file: %w", path, ErrNotRequests)
	}
	t, err := Read(f, mode)
	if err != nil {
		return Table{}, fmt.Errorf("%w (%s)", err, path)
	}
	return t, nil
}
