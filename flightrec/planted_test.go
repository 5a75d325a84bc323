package flightrec

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/postmortem"
)

// victims are files outside the report dir that the app's user would like root to overwrite,
// truncate or create; untouched reports whether they still are as they were.
type victims struct {
	dir   string
	files map[string]time.Time // path → mtime ("" content "precious"), or a path that must not exist
}

func newVictims(t *testing.T) *victims {
	return &victims{dir: t.TempDir(), files: map[string]time.Time{}}
}

// file makes a victim file and returns its path.
func (v *victims) file(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(v.dir, name)
	if err := os.WriteFile(p, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	v.files[p] = old
	return p
}

// absent is the path of a victim that must never be created (a dangling link's target).
func (v *victims) absent(name string) string {
	p := filepath.Join(v.dir, name)
	v.files[p] = time.Time{}
	return p
}

func (v *victims) untouched(t *testing.T) {
	t.Helper()
	for p, mtime := range v.files {
		st, err := os.Stat(p)
		if mtime.IsZero() {
			if err == nil {
				t.Errorf("%s was created through a planted link", filepath.Base(p))
			}
			continue
		}
		b, rerr := os.ReadFile(p)
		if err != nil || rerr != nil || string(b) != "precious" || !st.ModTime().Equal(mtime) {
			t.Errorf("%s was touched: %q (%v %v)", filepath.Base(p), b, err, rerr)
		}
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	os.Remove(link)
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// warnings collects a recorder's warnings.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) add(m string) { w.mu.Lock(); w.msgs = append(w.msgs, m); w.mu.Unlock() }

func (w *warnings) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}

// within runs f and fails the test when it does not return in time (a FIFO blocked it).
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s blocked", what)
	}
}

func openPlanted(dir string, c *clock, w *warnings) *Recorder {
	return Open(Options{Dir: dir, Identity: Identity{Host: "web-1", PID: 4242, Version: "1", Start: c.now()},
		SegmentBytes: minSegmentBytes, Now: c.now, Warn: w.add})
}

// TestPlantedLinksAtStart: symlinks at flight-<host>.a.jsonl, .b.jsonl and .lock, planted in the
// report dir before gwrap starts (and dangling ones, whose target root would create), leave
// their targets as they were through a run that rotates many times and the next start's read;
// each refusal is said once.
func TestPlantedLinksAtStart(t *testing.T) {
	dir, c, v := t.TempDir(), &clock{t0}, newVictims(t)
	names := segmentNames(dir, "web-1")
	lockPath := lockName(dir, "web-1")
	for _, dangling := range []bool{false, true} {
		for i, n := range []string{names[0], names[1], lockPath} {
			target := v.absent(filepath.Base(n) + ".new")
			if !dangling {
				target = v.file(t, []string{"passwd", "shadow", "crontab"}[i])
			}
			symlink(t, target, n)
		}
		var w warnings
		within(t, "the run", func() {
			if rep, _ := Recover(dir, "web-1", c.now(), postmortem.DefaultThresholds()); rep != nil {
				t.Error("a record was explained from planted links")
			}
			r := openPlanted(dir, c, &w)
			run(r, c, 200, false) // about 20 rotations of an 8 KiB segment
			r.Close()
		})
		v.untouched(t)
		saidOnce(t, w.list(), filepath.Base(names[0]), filepath.Base(names[1]), filepath.Base(lockPath))
	}
}

// TestPlantedFIFOAndDirAtStart: a FIFO at one segment's name and a directory at the other's are
// refused without blocking; a FIFO at the lock's name leaves the record going without its lock.
func TestPlantedFIFOAndDirAtStart(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	names := segmentNames(dir, "web-1")
	if err := syscall.Mkfifo(names[0], 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(names[1], 0o777); err != nil {
		t.Fatal(err)
	}
	var w warnings
	within(t, "a FIFO at a segment's name", func() {
		r := openPlanted(dir, c, &w)
		run(r, c, 20, false)
		r.Close()
	})
	if len(w.list()) == 0 {
		t.Error("nothing said")
	}

	dir2 := t.TempDir()
	if err := syscall.Mkfifo(lockName(dir2, "web-1"), 0o666); err != nil {
		t.Fatal(err)
	}
	var w2 warnings
	within(t, "a FIFO at the lock's name", func() {
		r := openPlanted(dir2, c, &w2)
		run(r, c, 5, false)
		r.crash()
	})
	if msgs := w2.list(); len(msgs) != 1 || !strings.Contains(msgs[0], "without its lock") {
		t.Errorf("warnings %q", msgs)
	}
	if rec, err := Previous(dir2, "web-1"); rec == nil || len(rec.Container) != 5 || err != nil {
		t.Errorf("the record without its lock: %v %v", rec, err)
	}
}

// TestLinksSwappedInMidRun: the app's user replaces both segments and the lock with symlinks
// while gwrap writes (the active segment renamed away, the other one deleted, between two
// rotations); the rotations that follow refuse them, write nothing through them, say so once
// each, and the next start neither reads through them nor touches the lock's target.
func TestLinksSwappedInMidRun(t *testing.T) {
	dir, c, v := t.TempDir(), &clock{t0}, newVictims(t)
	names := segmentNames(dir, "web-1")
	var w warnings
	r := openPlanted(dir, c, &w)
	run(r, c, 60, false) // a few rotations: both segments exist
	for _, n := range names {
		if _, err := os.Lstat(n); err != nil {
			t.Fatalf("before the swap: %v", err)
		}
	}
	if err := os.Rename(names[r.active], filepath.Join(dir, "moved-away")); err != nil {
		t.Fatal(err)
	}
	symlink(t, v.file(t, "passwd"), names[0])
	symlink(t, v.file(t, "shadow"), names[1])
	symlink(t, v.file(t, "crontab"), lockName(dir, "web-1"))
	within(t, "the run after the swap", func() {
		run(r, c, 200, false)
		r.crash() // killed: the next start reads what is there
		if rep, err := Recover(dir, "web-1", c.now(), postmortem.DefaultThresholds()); rep != nil {
			t.Errorf("a record was explained through planted links (%v)", err)
		}
		var w2 warnings
		next := openPlanted(dir, c, &w2)
		run(next, c, 20, false)
		next.Close()
		saidOnce(t, w2.list(), filepath.Base(names[0]), filepath.Base(names[1]), filepath.Base(lockName(dir, "web-1")))
	})
	v.untouched(t)
	saidOnce(t, w.list(), filepath.Base(names[0]), filepath.Base(names[1]))
}

// saidOnce checks that each name is refused in exactly one warning, and that every warning is
// about the flight record.
func saidOnce(t *testing.T, msgs []string, names ...string) {
	t.Helper()
	for _, n := range names {
		k := 0
		for _, m := range msgs {
			if strings.Contains(m, n+": refused") {
				k++
			}
		}
		if k != 1 {
			t.Errorf("%s refused in %d warnings, want 1: %q", n, k, msgs)
		}
	}
	for _, m := range msgs {
		if !strings.Contains(m, "flight record") {
			t.Errorf("warning %q does not say what it is about", m)
		}
	}
}

// TestOneSegmentRefusedKeepsTheOther: a symlink at the second segment's name leaves the record
// going in the first alone: the next start still explains the death from it.
func TestOneSegmentRefusedKeepsTheOther(t *testing.T) {
	dir, c, v := t.TempDir(), &clock{t0}, newVictims(t)
	symlink(t, v.file(t, "shadow"), segmentNames(dir, "web-1")[1])
	var w warnings
	r := openPlanted(dir, c, &w)
	run(r, c, 200, false)
	r.crash()
	v.untouched(t)
	rec, err := Previous(dir, "web-1")
	if rec == nil || len(rec.Container) == 0 || rec.Closed {
		t.Fatalf("no record kept in the other segment: %v", rec)
	}
	if err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("the refused segment is not said when reading: %v", err)
	}
	if msgs := w.list(); len(msgs) != 1 {
		t.Errorf("warnings %q, want one", msgs)
	}
}
