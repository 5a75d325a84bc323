package postmortem

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/testkit"
)

// tmpfs mounts a tmpfs of size bytes (read-only when ro) on a new temp dir, unmounted when the
// test ends.
func tmpfs(t *testing.T, size int, ro bool) string {
	t.Helper()
	testkit.RequireRoot(t)
	dir := t.TempDir()
	var flags uintptr = unix.MS_NOSUID | unix.MS_NODEV
	if ro {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", flags, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		testkit.Unavailable(t, "mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

// TestStoreReadOnlyFilesystem: a read-only report dir is an error that says so, never a panic.
func TestStoreReadOnlyFilesystem(t *testing.T) {
	dir := tmpfs(t, 1<<20, true)
	for _, sub := range []string{"", "gwrap"} { // the dir itself, and one to create
		path, err := NewStore(filepath.Join(dir, sub), Retention{}).Write(sampleReport(1, t0))
		if !errors.Is(err, syscall.EROFS) || path != "" {
			t.Errorf("%q: %q, %v; want EROFS", sub, path, err)
		}
	}
}

// TestStoreFullDisk: a full report dir fails the write with ENOSPC and leaves no temp file; the
// reports already there stay readable; once room is made, writes work again.
func TestStoreFullDisk(t *testing.T) {
	dir := tmpfs(t, 64<<10, false)
	s := NewStore(dir, Retention{})
	first := sampleReport(1, t0)
	if _, err := s.Write(first); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	path, err := s.Write(sampleReport(2, t0.Add(time.Second)))
	if !errors.Is(err, syscall.ENOSPC) || path != "" {
		t.Fatalf("write to a full disk: %q, %v; want ENOSPC", path, err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || strings.Contains(e.Name(), "-2") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	if r, err := s.Latest(); err != nil || r.ID != first.ID {
		t.Errorf("latest after the failed write: %v %v", r.ID, err)
	}
	os.Remove(filler)
	if _, err := s.Write(sampleReport(3, t0.Add(2*time.Second))); err != nil {
		t.Errorf("after making room: %v", err)
	}
}

// TestStoreDirModeIgnoresUmask: the directory is 0750 even under a umask of 077.
func TestStoreDirModeIgnoresUmask(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "reports")
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	if _, err := NewStore(dir, Retention{}).Write(sampleReport(1, t0)); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("dir mode %v (%v), want 0750", st.Mode().Perm(), err)
	}
}
