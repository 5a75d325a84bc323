package pystack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/asuser"
)

// maxSourceLine bounds the text Source returns.
const maxSourceLine = 200

// Bounds of a source read: a file larger than maxSourceFile is not a source file (a 10 GB sparse
// file named in a frame), maxPath is Linux's PATH_MAX, and sourceDeadline is all a read may take
// (a file on a hung network file system).
const (
	maxSourceFile  = 8 << 20
	maxPath        = 4096
	sourceDeadline = 500 * time.Millisecond
)

// ErrNoSource marks a frame whose source line cannot be read (generated code, a file gone).
var ErrNoSource = errors.New("no source line")

// Source returns the text of a frame's line as the process sees its files (through
// /proc/<pid>/root, so a worker in another mount namespace is read right), trimmed and cut at 200
// bytes: e.g. `cur.execute("SELECT pg_sleep(100)")`, which names the C call (psycopg2's execute,
// time.sleep, sum) that faulthandler cannot show as a frame. The file may have changed on disk
// since the process loaded it; say "the line now reads" when quoting it.
//
// The file name in a frame is the app's to choose (compile(src, "/any/path", "exec")), and gwrap
// is root: the file is read with the process's own rights (asuser: its uid, gid and groups, read
// from its status), resolved inside its root (openat2 RESOLVE_IN_ROOT: neither ".." nor a symlink
// leads out of it), opened without blocking (a FIFO, a device), used only when it is a regular
// file of at most maxSourceFile bytes, and all within sourceDeadline. Anything else is
// ErrNoSource.
//
// Reads /proc/<pid>/status and /proc/<pid>/root/<file>.
func (h *Hook) Source(pid int, f Frame) (string, error) {
	if f.Line <= 0 || !filepath.IsAbs(f.File) || len(f.File) > maxPath || strings.IndexByte(f.File, 0) >= 0 {
		return "", fmt.Errorf("pystack: %s: %w", f, ErrNoSource)
	}
	noSource := func(err error) (string, error) {
		return "", fmt.Errorf("pystack: %s: %w: %w", f, ErrNoSource, err)
	}
	cred, err := asuser.Of(h.procRoot, pid)
	if err != nil {
		return noSource(err)
	}
	root, err := unix.Open(filepath.Join(h.procRoot, strconv.Itoa(pid), "root"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return noSource(fmt.Errorf("the process's root: %w", err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), sourceDeadline)
	defer cancel()
	var line string
	done := make(chan struct{}) // closed once the reader no longer needs root
	err = asuser.Do(ctx, cred, func() error {
		defer close(done)
		defer unix.Close(root)
		var rerr error
		line, rerr = readLine(root, f.File, f.Line)
		return rerr
	})
	if errors.Is(err, asuser.ErrBusy) || errors.Is(err, asuser.ErrCannotSwitch) {
		unix.Close(root) // the function never ran
	}
	if err != nil {
		return noSource(err)
	}
	<-done
	return line, nil
}

// readLine reads line n of file, resolved inside the directory root; called with the process's
// identity (Source).
func readLine(root int, file string, n int) (string, error) {
	rel := strings.TrimLeft(file, "/")
	flags := uint64(unix.O_RDONLY | unix.O_NONBLOCK | unix.O_CLOEXEC | unix.O_NOCTTY)
	fd, err := unix.Openat2(root, rel, &unix.OpenHow{Flags: flags, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS})
	if errors.Is(err, unix.ENOSYS) {
		// Linux before 5.6: no "..", no symlink anywhere on the way.
		if slices.Contains(strings.Split(rel, "/"), "..") {
			return "", fmt.Errorf("%s: a path with \"..\"", file)
		}
		fd, err = openNoLinks(root, rel, int(flags))
	}
	if err != nil {
		return "", &os.PathError{Op: "open", Path: file, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return "", &os.PathError{Op: "fstat", Path: file, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return "", fmt.Errorf("%s: not a regular file", file)
	}
	if st.Size > maxSourceFile {
		unix.Close(fd)
		return "", fmt.Errorf("%s: %d bytes, more than a source file's %d", file, st.Size, maxSourceFile)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return "", &os.PathError{Op: "fcntl", Path: file, Err: err}
	}
	r := os.NewFile(uintptr(fd), file)
	defer r.Close()
	return nthLine(io.LimitReader(r, maxSourceFile), n)
}

// openNoLinks opens rel below root one element at a time, following no symlink.
func openNoLinks(root int, rel string, flags int) (int, error) {
	parts := strings.Split(rel, "/")
	dir := root
	for i, p := range parts {
		if p == "" || p == "." {
			continue
		}
		if i == len(parts)-1 {
			fd, err := unix.Openat(dir, p, flags|unix.O_NOFOLLOW, 0)
			if dir != root {
				unix.Close(dir)
			}
			return fd, err
		}
		next, err := unix.Openat(dir, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if dir != root {
			unix.Close(dir)
		}
		if err != nil {
			return -1, err
		}
		dir = next
	}
	return -1, unix.EISDIR
}

// nthLine returns line n (from 1) of r, trimmed, cut at maxSourceLine bytes; long lines are read
// through without being held whole.
func nthLine(r io.Reader, n int) (string, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, 64<<20), 4096)
	var b []byte
	for line := 1; ; {
		chunk, err := br.ReadSlice('\n')
		if line == n && len(b) < 4*maxSourceLine {
			b = append(b, chunk...)
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue // the same line goes on
		case err == nil || errors.Is(err, io.EOF) && (len(chunk) > 0 || line == n && len(b) > 0):
			if line == n {
				s := strings.TrimSpace(string(b))
				if len(s) > maxSourceLine {
					k := maxSourceLine
					for k > 0 && !utf8.RuneStart(s[k]) {
						k-- // never cut a character in two
					}
					s = s[:k] + "…"
				}
				return s, nil
			}
			if err != nil {
				return "", fmt.Errorf("line %d of %d: %w", n, line, io.ErrUnexpectedEOF)
			}
			line++
		case errors.Is(err, io.EOF):
			return "", fmt.Errorf("line %d of %d: %w", n, line-1, io.ErrUnexpectedEOF)
		default:
			return "", err
		}
	}
}
