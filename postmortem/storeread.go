package postmortem

import (
	"errors"
	"fmt"
	"io"

	"github.com/gwrap/gwrap/internal/safedir"
)

// readRegular reads name in d, a regular file of at most max bytes (never through a symlink, never
// blocking on a FIFO or a device), never reading more than max+1 bytes whatever the file claims.
func readRegular(d *safedir.Dir, name string, max int64) ([]byte, error) {
	f, size, err := d.OpenRead(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size > max {
		return nil, fmt.Errorf("%s: %d bytes, more than a report's %d", f.Name(), size, max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: more than a report's %d bytes", f.Name(), max)
	}
	return b, nil
}

// readHead reads the first n bytes of name in d, a regular file (as readRegular).
func readHead(d *safedir.Dir, name string, n int) ([]byte, error) {
	f, _, err := d.OpenRead(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := io.ReadFull(f, b)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	return b[:m], nil
}
