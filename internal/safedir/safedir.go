// Package safedir opens gwrap's own files in a directory that others may write: a report dir on
// a volume every container of a pod can write (a Kubernetes emptyDir is mode 0777), where the
// app's user can plant a symlink, a FIFO, a directory or a hard link at any of gwrap's names,
// before gwrap starts or between two of its writes.
//
// Everything goes through one descriptor of the directory, opened once without following a
// symlink: a directory swapped for a link after that changes nothing. Names are single path
// elements, opened with O_NOFOLLOW (a symlink is refused, never followed) and O_NONBLOCK (a FIFO
// or a device never blocks the open), and a file is used only after fstat says it is a regular
// file. What gwrap writes, truncates, deletes or reads back as its own record must also be its
// own: owned by the user gwrap's files get here and not hard-linked elsewhere. O_TRUNC is never
// used: a file is truncated through its descriptor once it passed those checks, so no check can
// be raced.
//
// Linux only (openat, fstatat, unlinkat, renameat on a directory descriptor).
package safedir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrRefused marks something at one of gwrap's names that gwrap will not use: a symlink, a FIFO,
// a device, a socket, a directory, a file of another user or one with more than one link.
var ErrRefused = errors.New("refused")

// Dir is an open directory. Its methods are safe for concurrent use.
type Dir struct {
	path string
	fd   int

	mu    sync.Mutex
	owner int // the uid gwrap's files get in this directory; -1 until probed
}

// Open opens the directory at path; its last element must be a real directory, not a symlink
// (ErrRefused). The first check of an owner learns which user the files gwrap creates there
// belong to (a network share may map every file to one user) by creating and removing a probe
// file; where it cannot write, gwrap's effective uid stands.
func Open(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		var st unix.Stat_t
		if (errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR)) && unix.Lstat(path, &st) == nil {
			return nil, fmt.Errorf("%s: %w: %s is there, not a directory", path, ErrRefused, kind(st.Mode))
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &Dir{path: path, fd: fd, owner: -1}, nil
}

// probeOwner creates and removes a file to see whose it becomes; where it cannot, gwrap's
// effective uid stands.
func (d *Dir) probeOwner() int {
	owner := os.Geteuid()
	f, name, err := d.CreateTemp(".gwrap-owner.tmp-")
	if err != nil {
		return owner
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) == nil {
		owner = int(st.Uid)
	}
	f.Close()
	_ = unix.Unlinkat(d.fd, name, 0)
	return owner
}

// Path is the directory's path, for messages.
func (d *Dir) Path() string { return d.path }

// Owner is the uid gwrap's own files have in this directory, learned on first use.
func (d *Dir) Owner() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.owner < 0 {
		d.owner = d.probeOwner()
	}
	return d.owner
}

// Close closes the directory's descriptor.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// Gone reports whether the directory was removed since it was opened (its link count is 0):
// the caller may open its path again.
func (d *Dir) Gone() bool {
	var st unix.Stat_t
	return unix.Fstat(d.fd, &st) != nil || st.Nlink == 0
}

// name checks that n is one element of a path.
func (d *Dir) name(n string) error {
	if n == "" || n == "." || n == ".." || strings.ContainsRune(n, '/') {
		return fmt.Errorf("%s: %q is not a file name", d.path, n)
	}
	return nil
}

func (d *Dir) join(n string) string { return filepath.Join(d.path, n) }

// kind names a file type for a message.
func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "a device"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "not a regular file"
}

// refuse is the error for something at name that is not what gwrap may use.
func (d *Dir) refuse(name, why string) error {
	return fmt.Errorf("%s: %w: %s is there, not gwrap's own regular file", d.join(name), ErrRefused, why)
}

// check says why st is not gwrap's own regular file, or nil. own adds the owner and link checks.
func (d *Dir) check(name string, st *unix.Stat_t, own bool) error {
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return d.refuse(name, kind(st.Mode))
	}
	if !own {
		return nil
	}
	if int(st.Uid) != d.Owner() {
		return d.refuse(name, fmt.Sprintf("a file of uid %d", st.Uid))
	}
	if st.Nlink > 1 {
		return d.refuse(name, fmt.Sprintf("a file with %d hard links", st.Nlink))
	}
	return nil
}

// open opens name with flag (plus O_NOFOLLOW, O_NONBLOCK, O_CLOEXEC) and checks what it got.
func (d *Dir) open(name string, flag int, perm uint32, own bool) (*os.File, unix.Stat_t, error) {
	var st unix.Stat_t
	if err := d.name(name); err != nil {
		return nil, st, err
	}
	if flag&unix.O_TRUNC != 0 {
		return nil, st, fmt.Errorf("%s: O_TRUNC is not allowed: truncate after the checks", d.join(name))
	}
	fd, err := unix.Openat(d.fd, name, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, perm)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, st, d.refuse(name, "a symlink")
		}
		if errors.Is(err, unix.EISDIR) {
			return nil, st, d.refuse(name, "a directory")
		}
		if errors.Is(err, unix.ENXIO) { // a FIFO opened for writing with no reader, a socket
			if unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
				return nil, st, d.refuse(name, kind(st.Mode))
			}
		}
		return nil, st, &os.PathError{Op: "open", Path: d.join(name), Err: err}
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, st, &os.PathError{Op: "fstat", Path: d.join(name), Err: err}
	}
	if err := d.check(name, &st, own); err != nil {
		unix.Close(fd)
		return nil, st, err
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, st, &os.PathError{Op: "fcntl", Path: d.join(name), Err: err}
	}
	return os.NewFile(uintptr(fd), d.join(name)), st, nil
}

// OpenRead opens a regular file for reading, whoever owns it (a report someone copied in is
// still readable). It returns the file's size.
func (d *Dir) OpenRead(name string) (*os.File, int64, error) {
	f, st, err := d.open(name, unix.O_RDONLY, 0, false)
	return f, st.Size, err
}

// OpenOwn opens one of gwrap's own files with flag (O_RDONLY, O_WRONLY or O_RDWR, with O_CREAT,
// O_APPEND as needed; never O_TRUNC: call Truncate on the result). It returns the file's size.
func (d *Dir) OpenOwn(name string, flag int, perm os.FileMode) (*os.File, int64, error) {
	f, st, err := d.open(name, flag, uint32(perm.Perm()), true)
	return f, st.Size, err
}

// ReadOwn reads one of gwrap's own files, at most max bytes (a larger file is an error).
func (d *Dir) ReadOwn(name string, max int64) ([]byte, error) {
	f, size, err := d.OpenOwn(name, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if size > max {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d gwrap reads", d.join(name), size, max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", d.join(name), err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: more than the %d bytes gwrap reads", d.join(name), max)
	}
	return b, nil
}

// Stat is fstatat without following a symlink.
func (d *Dir) Stat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := d.name(name); err != nil {
		return st, err
	}
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "stat", Path: d.join(name), Err: err}
	}
	return st, nil
}

// RemoveOwn deletes one of gwrap's own regular files. Something else at the name is refused
// (ErrRefused) and left alone; a missing file is fs.ErrNotExist. Whoever can write the directory
// can swap the name between the check and the unlink; the unlink then removes their entry, never
// anything outside the directory (unlinkat never follows a link and never removes a directory).
func (d *Dir) RemoveOwn(name string) error {
	st, err := d.Stat(name)
	if err != nil {
		return err
	}
	if err := d.check(name, &st, true); err != nil {
		return err
	}
	if err := unix.Unlinkat(d.fd, name, 0); err != nil {
		return &os.PathError{Op: "remove", Path: d.join(name), Err: err}
	}
	return nil
}

// CreateTemp creates a new file prefix+random, mode 0600, that did not exist (O_EXCL: a planted
// symlink or file of that name makes it fail, never followed). It returns the file and its name.
func (d *Dir) CreateTemp(prefix string) (*os.File, string, error) {
	for range 10 {
		var r [6]byte
		if _, err := rand.Read(r[:]); err != nil {
			return nil, "", err
		}
		name := prefix + hex.EncodeToString(r[:])
		// O_EXCL made it: it is gwrap's whoever the file system says owns it (probeOwner).
		f, _, err := d.open(name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL, 0o600, false)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		return f, name, err
	}
	return nil, "", fmt.Errorf("%s: cannot create a temp file named %s*", d.path, prefix)
}

// Rename renames oldName to newName in the directory (renameat: a symlink at newName is replaced
// itself, never followed).
func (d *Dir) Rename(oldName, newName string) error {
	if err := d.name(oldName); err != nil {
		return err
	}
	if err := d.name(newName); err != nil {
		return err
	}
	if err := unix.Renameat(d.fd, oldName, d.fd, newName); err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(oldName), New: d.join(newName), Err: err}
	}
	return nil
}

// Entry is one name in the directory with what fstatat says of it.
type Entry struct {
	Name string
	Stat unix.Stat_t
}

// Regular reports whether the entry is a regular file.
func (e Entry) Regular() bool { return e.Stat.Mode&unix.S_IFMT == unix.S_IFREG }

// List lists the directory's entries (not following symlinks). A name removed while listing is
// left out.
func (d *Dir) List() ([]Entry, error) {
	fd, err := unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), d.path)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", d.path, err)
	}
	out := make([]Entry, 0, len(names))
	for _, n := range names {
		var st unix.Stat_t
		if unix.Fstatat(d.fd, n, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			continue
		}
		out = append(out, Entry{Name: n, Stat: st})
	}
	return out, nil
}
