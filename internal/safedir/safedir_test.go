package safedir

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/testkit"
)

// plant puts one of the things the app's user can leave at a name in dir; it returns a
// function that says whether what is outside the directory is untouched.
type plant struct {
	name  string
	root  bool // needs root (mknod, chown)
	make  func(t *testing.T, path, outside string)
	check func(t *testing.T, path, outside string)
}

func plants() []plant {
	untouched := func(t *testing.T, _, outside string) {
		t.Helper()
		if b, err := os.ReadFile(outside); err != nil || string(b) != "precious" {
			t.Errorf("the file outside now holds %q (%v)", b, err)
		}
	}
	return []plant{
		{name: "symlink", make: func(t *testing.T, p, outside string) { must(t, os.Symlink(outside, p)) }, check: untouched},
		{name: "dangling symlink", make: func(t *testing.T, p, outside string) { must(t, os.Symlink(outside+".new", p)) },
			check: func(t *testing.T, _, outside string) {
				if _, err := os.Lstat(outside + ".new"); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("the dangling link's target was created: %v", err)
				}
			}},
		{name: "FIFO", make: func(t *testing.T, p, _ string) { must(t, unix.Mkfifo(p, 0o666)) }, check: untouched},
		{name: "directory", make: func(t *testing.T, p, _ string) { must(t, os.Mkdir(p, 0o777)) }, check: untouched},
		{name: "socket", make: func(t *testing.T, p, _ string) {
			l, err := net.Listen("unix", p)
			must(t, err)
			t.Cleanup(func() { l.Close() })
		}, check: untouched},
		{name: "device", root: true, make: func(t *testing.T, p, _ string) {
			must(t, unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))) // /dev/null
		}, check: untouched},
		{name: "hard link", root: true, make: func(t *testing.T, p, outside string) { must(t, os.Link(outside, p)) }, check: untouched},
		{name: "another user's file", root: true, make: func(t *testing.T, p, _ string) {
			must(t, os.WriteFile(p, []byte("theirs"), 0o666))
			must(t, os.Chown(p, 65534, 65534))
		}, check: func(t *testing.T, p, _ string) {
			if b, err := os.ReadFile(p); err != nil || string(b) != "theirs" {
				t.Errorf("their file now holds %q (%v)", b, err)
			}
		}},
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRefusesWhatIsNotItsOwn: at one of gwrap's names, each thing the app's user can plant is
// refused by every operation (ErrRefused), and what it points to is left as it was.
func TestRefusesWhatIsNotItsOwn(t *testing.T) {
	for _, p := range plants() {
		t.Run(p.name, func(t *testing.T) {
			if p.root {
				testkit.RequireRoot(t)
			}
			dir := t.TempDir()
			outside := filepath.Join(t.TempDir(), "precious")
			must(t, os.WriteFile(outside, []byte("precious"), 0o666))
			path := filepath.Join(dir, "flight-h.a.jsonl")
			p.make(t, path, outside)
			d, err := Open(dir)
			must(t, err)
			defer d.Close()

			done := make(chan struct{})
			go func() { // a FIFO must not block any of these
				defer close(done)
				if f, _, err := d.OpenOwn("flight-h.a.jsonl", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640); !errors.Is(err, ErrRefused) {
					t.Errorf("OpenOwn for writing: %v, want ErrRefused", err)
					if f != nil {
						f.Close()
					}
				}
				if f, _, err := d.OpenOwn("flight-h.a.jsonl", os.O_RDWR|os.O_CREATE, 0o640); !errors.Is(err, ErrRefused) {
					t.Errorf("OpenOwn read-write: %v, want ErrRefused", err)
					if f != nil {
						f.Close()
					}
				}
				if _, err := d.ReadOwn("flight-h.a.jsonl", 1<<20); !errors.Is(err, ErrRefused) {
					t.Errorf("ReadOwn: %v, want ErrRefused", err)
				}
				if err := d.RemoveOwn("flight-h.a.jsonl"); !errors.Is(err, ErrRefused) {
					t.Errorf("RemoveOwn: %v, want ErrRefused", err)
				}
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("an operation blocked")
			}
			if _, err := os.Lstat(path); err != nil {
				t.Errorf("the planted %s is gone: %v", p.name, err)
			}
			p.check(t, path, outside)
		})
	}
}

// TestOwnFiles: gwrap's own files are created, truncated through their descriptor, read back,
// renamed and removed; O_TRUNC is refused (it would truncate before the checks).
func TestOwnFiles(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir)
	must(t, err)
	defer d.Close()
	if d.Owner() != os.Geteuid() {
		t.Errorf("owner %d, want %d", d.Owner(), os.Geteuid())
	}
	f, _, err := d.OpenOwn("x", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	must(t, err)
	_, err = f.WriteString("hello\n")
	must(t, err)
	f.Close()
	if b, err := d.ReadOwn("x", 100); err != nil || string(b) != "hello\n" {
		t.Errorf("ReadOwn: %q %v", b, err)
	}
	if _, err := d.ReadOwn("x", 3); err == nil {
		t.Error("ReadOwn past its bound did not fail")
	}
	if _, _, err := d.OpenOwn("x", os.O_WRONLY|os.O_TRUNC, 0); err == nil {
		t.Error("O_TRUNC was accepted")
	}
	tf, tname, err := d.CreateTemp(".t-")
	must(t, err)
	tf.Close()
	must(t, d.Rename(tname, "y"))
	must(t, d.RemoveOwn("x"))
	must(t, d.RemoveOwn("y"))
	if err := d.RemoveOwn("y"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("removing a missing file: %v", err)
	}
	for _, bad := range []string{"", ".", "..", "a/b", "../x"} {
		if _, _, err := d.OpenOwn(bad, os.O_RDONLY, 0); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	ents, err := d.List()
	must(t, err)
	if len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

// TestDirSwappedAfterOpen: once open, the directory is the one gwrap opened, even when its path
// is renamed away and replaced by a symlink to somewhere else.
func TestDirSwappedAfterOpen(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "reports")
	must(t, os.Mkdir(dir, 0o750))
	elsewhere := t.TempDir()
	d, err := Open(dir)
	must(t, err)
	defer d.Close()
	must(t, os.Rename(dir, dir+".old"))
	must(t, os.Symlink(elsewhere, dir))
	f, _, err := d.OpenOwn("r", os.O_WRONLY|os.O_CREATE, 0o640)
	must(t, err)
	f.Close()
	if _, err := os.Stat(filepath.Join(elsewhere, "r")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the file went through the swapped-in link: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir+".old", "r")); err != nil {
		t.Errorf("the file is not in the directory gwrap opened: %v", err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrRefused) {
		t.Errorf("opening a symlinked dir: %v, want ErrRefused", err)
	}
}
