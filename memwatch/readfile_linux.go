package memwatch

import (
	"io/fs"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/pread"
)

// readInto reads the whole file at path into buf (grown as needed) and returns the contents.
//
// It is os.ReadFile without the poller: cgroupfs files are pollable, so os.Open registers each
// one with epoll (and unregisters it on Close) and ReadFile adds an fstat, 7 syscalls where
// open, read until 0, close is 4. A sample reads ~13 files every second, and these syscalls
// were most of its cost. Errors are *fs.PathError, so errors.Is(err, fs.ErrNotExist) holds.
func readInto(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// readCached is readInto through files, a cache of open descriptors by path: a cgroup file
// stays open and is re-read with pread from offset 0 (the kernel regenerates it), one syscall
// instead of open, read, read, close. A descriptor whose read fails is closed and the path
// opened afresh (the cgroup may have been removed and recreated).
func readCached(files map[string]int, path string, buf []byte) ([]byte, error) {
	if fd, ok := files[path]; ok {
		if b, err := pread.Whole(fd, buf); err == nil {
			return b, nil
		}
		unix.Close(fd)
		delete(files, path)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	b, err := pread.Whole(fd, buf)
	if err != nil {
		unix.Close(fd)
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	files[path] = fd
	return b, nil
}
