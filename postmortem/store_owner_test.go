package postmortem

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/safedir"
)

// foreignFiles fills dir with files that are not gwrap's but look more or less like its own, all
// old enough to be leftovers, and returns their contents by name (a symlink's by its target).
func foreignFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	outside := filepath.Join(t.TempDir(), "precious.json")
	files := map[string]string{
		"index.html":                      "<!doctype html><title>my site</title>",
		"00-dataset.json":                 strings.Repeat("x", 2<<20),
		".config.json.tmp-1":              "half a config",
		"20250101T000000.000Z-1.json":     `{"hello": "a report-like name, not a report"}`,
		"20250101T000000.000Z-2.html":     "<!doctype html><title>not gwrap's page</title>",
		".20250101T000000.000Z-3.json.x":  "not a temp file of gwrap's",
		"notes.txt":                       "notes",
		"20250101T000000.000Z-4.json.bak": `{"schema": "gwrap.postmortem/v1"}`,
	}
	old := time.Now().Add(-leftoverAge - time.Hour)
	for n, c := range files {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	// A report-named JSON that is a symlink to someone's file, a FIFO and a link to /dev/zero
	// named like reports: never followed, never read, never deleted.
	if err := os.WriteFile(outside, []byte(`{"schema": "gwrap.postmortem/v1"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for n, target := range map[string]string{"20250101T000000.000Z-5.json": outside, "20250101T000000.000Z-6.json": "/dev/zero", "x.json": "/dev/zero"} {
		if err := os.Symlink(target, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
		files[n] = "-> " + target
	}
	for _, n := range []string{"20250101T000000.000Z-7.json", "fifo.json"} {
		if err := syscall.Mkfifo(filepath.Join(dir, n), 0o644); err != nil {
			t.Fatal(err)
		}
		files[n] = "fifo"
	}
	return files
}

func checkForeign(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for n, want := range files {
		p := filepath.Join(dir, n)
		st, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v (deleted by gwrap)", n, err)
			continue
		}
		switch {
		case strings.HasPrefix(want, "-> "):
			if got, _ := os.Readlink(p); got != strings.TrimPrefix(want, "-> ") {
				t.Errorf("%s: link to %q now", n, got)
			}
		case want == "fifo":
			if st.Mode()&os.ModeNamedPipe == 0 {
				t.Errorf("%s: no longer a FIFO", n)
			}
		default:
			if got, _ := os.ReadFile(p); string(got) != want {
				t.Errorf("%s: content changed", n)
			}
		}
	}
}

// within runs f and fails the test if it does not return within d (a read that blocks on a FIFO).
func within(t *testing.T, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// TestStoreTouchesOnlyItsOwnFiles: a report dir shared with other files (a web root, a data
// volume): the tightest retention deletes none of them, counts none of them, reads no FIFO and
// no device, and lists only gwrap's reports.
func TestStoreTouchesOnlyItsOwnFiles(t *testing.T) {
	dir := t.TempDir()
	files := foreignFiles(t, dir)
	s := NewStore(dir, Retention{MaxCount: 1, MaxBytes: 1})
	var last Report
	within(t, 10*time.Second, "writing with retention", func() {
		for i := 0; i < 3; i++ {
			last = sampleReport(10+i, t0.Add(time.Duration(i)*time.Second))
			if _, err := s.Write(last); err != nil {
				t.Error(err)
			}
		}
	})
	checkForeign(t, dir, files)
	var list []Summary
	var err error
	within(t, 10*time.Second, "List", func() { list, err = s.List() })
	if err != nil || len(list) != 1 || list[0].ID != last.ID {
		t.Fatalf("list %+v, %v; want only %s", list, err, last.ID)
	}
	within(t, 10*time.Second, "Latest", func() {
		if r, err := s.Latest(); err != nil || r.ID != last.ID {
			t.Errorf("latest %s, %v", r.ID, err)
		}
	})
	for _, id := range []string{"20250101T000000.000Z-5", "20250101T000000.000Z-6", "20250101T000000.000Z-7", "20250101T000000.000Z-1"} {
		within(t, 10*time.Second, "Get "+id, func() {
			if _, err := s.Get(id); err == nil {
				t.Errorf("Get(%s) read something that is not a report", id)
			}
		})
	}
	checkForeign(t, dir, files)
}

// TestStoreKeepsTheReportJustWritten: a report older than those kept (another instance's clock,
// a late flush) is not deleted by the retention its own write triggers.
func TestStoreKeepsTheReportJustWritten(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(dir, Retention{MaxCount: 2})
	for i := 1; i <= 2; i++ {
		if _, err := s.Write(sampleReport(i, t0.Add(time.Duration(i)*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	older := sampleReport(3, t0)
	path, err := s.Write(older)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the report just written was deleted: %v", err)
	}
	list, _ := s.List()
	if len(list) != 2 || list[0].ID != older.ID {
		t.Errorf("kept %+v; want the one just written and the newest", list)
	}
}

// TestStoreRefusesSymlinkOrFile: a report dir that is a symlink (to /etc, say) or a file is
// refused by Check and by every write, and nothing is written through it.
func TestStoreRefusesSymlinkOrFile(t *testing.T) {
	target := t.TempDir()
	link := filepath.Join(t.TempDir(), "reports")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{link, file} {
		s := NewStore(dir, Retention{})
		err := s.Check()
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), dir) {
			t.Errorf("Check(%s) = %v; want ErrRefused naming it", dir, err)
		}
		if _, err := s.Write(sampleReport(1, t0)); !errors.Is(err, ErrRefused) {
			t.Errorf("Write to %s = %v; want ErrRefused", dir, err)
		}
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Errorf("written through the symlink: %v", ents)
	}
}

// TestStoreCheck: Check creates a missing dir, and finds an unwritable one at once.
func TestStoreCheck(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "gwrap")
	if err := NewStore(dir, Retention{}).Check(); err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("after Check: %v %v; want an empty dir", ents, err)
	}
	ro := tmpfs(t, 1<<20, true)
	err := NewStore(ro, Retention{}).Check()
	if err == nil || !errors.Is(err, syscall.EROFS) || !strings.Contains(err.Error(), "not writable") {
		t.Errorf("Check on a read-only dir: %v", err)
	}
}

// TestReadRegularBounds: a file larger than a report is refused before it is read.
func TestReadRegularBounds(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "big"), bytes.Repeat([]byte("x"), 1024), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := safedir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := readRegular(d, "big", 1000); err == nil {
		t.Error("a 1024-byte file read under a 1000-byte bound")
	}
	if b, err := readRegular(d, "big", 1024); err != nil || len(b) != 1024 {
		t.Errorf("%d bytes, %v", len(b), err)
	}
}

// TestStoreDirSwappedMidRun: the report dir renamed away and replaced by a symlink (to /etc, say)
// while gwrap runs: nothing is written through the link, and the store goes on in the directory
// it opened.
func TestStoreDirSwappedMidRun(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "reports")
	s := NewStore(dir, Retention{MaxCount: 1})
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(sampleReport(1, t0)); err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	if err := os.Rename(dir, dir+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(sampleReport(2, t0.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
		t.Errorf("written through the swapped-in link: %v", ents)
	}
	ents, _ := os.ReadDir(dir + ".moved")
	if len(ents) != 2 { // the second report's JSON and page; retention removed the first
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("the directory gwrap opened holds %q", names)
	}
}
