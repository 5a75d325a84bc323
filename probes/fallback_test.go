package probes

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// copyTree copies the fixture /proc tree into a temporary directory, symlinks as symlinks, so a
// test can break parts of it.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, to)
		case d.IsDir():
			return os.MkdirAll(to, 0o755)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(to, b, 0o644)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestChildrenByPPID: without task/*/children (CONFIG_PROC_CHILDREN off), the workers are
// found by the ppid in every stat; an unrelated process is not.
func TestChildrenByPPID(t *testing.T) {
	master, worker := fixturePIDs(t)
	root := copyTree(t, "testdata/proc")
	if err := os.Remove(filepath.Join(root, "18833/task/18833/children")); err != nil {
		t.Fatal(err)
	}
	// An unrelated process (ppid 1) and a non-process entry.
	if err := os.MkdirAll(filepath.Join(root, "4242"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "4242/stat"), []byte("4242 (sh) S 1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77 0 0"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "sys"), 0o755); err != nil {
		t.Fatal(err)
	}
	kids, err := NewFS(root).Children(master)
	if err != nil || len(kids) != 1 || kids[0].PID != worker || kids[0].StartTime == 0 {
		t.Fatalf("children %v %v", kids, err)
	}
	if _, err := NewFS(root).Children(999999); err == nil {
		t.Error("a vanished master gave no error")
	}
}

// TestHeartbeatFromMaster: when the worker's fd table is unreadable, its heartbeat is read from
// the master's fd table, but only when the assignment is unambiguous.
func TestHeartbeatFromMaster(t *testing.T) {
	master, worker := fixturePIDs(t)
	for _, tc := range []struct {
		name     string
		masterHB int // heartbeat files in the master's fd table
		want     bool
	}{
		{"one worker, one master heartbeat fd", 1, true},
		{"ambiguous: two master heartbeat fds", 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := copyTree(t, "testdata/proc")
			fdDir := filepath.Join(root, "18835/fd")
			if err := os.RemoveAll(fdDir); err != nil {
				t.Fatal(err)
			}
			// Not a directory: ReadDir fails with ENOTDIR, standing in for EACCES under --user.
			if err := os.WriteFile(fdDir, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			files := t.TempDir()
			mono := monotonicNow()
			for i := 0; i < tc.masterHB; i++ {
				hb := filepath.Join(files, "wgunicorn-"+string(rune('a'+i)))
				if err := os.WriteFile(hb, nil, 0o600); err != nil {
					t.Fatal(err)
				}
				// Gunicorn ≥ 22: mtime is CLOCK_MONOTONIC seconds of the last beat, 5 s ago.
				m := time.Unix(0, int64(mono-5*time.Second))
				if err := os.Chtimes(hb, m, m); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Join(root, "18833/fd"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(hb, filepath.Join(root, "18833/fd", string(rune('6'+i)))); err != nil {
					t.Fatal(err)
				}
			}
			var warns []string
			w := NewWatcher(NewFS(root), Options{Limits: Limits{Timeout: 30 * time.Second}, Warn: func(m string) { warns = append(warns, m) }})
			workers := map[int]*tracked{}
			var events []Event
			w.discover(master, workers, time.Now(), func(e Event) { events = append(events, e) })
			t.Cleanup(func() {
				for _, tr := range workers {
					tr.w.close()
				}
			})
			if len(events) != 2 || events[0].Kind != EventBoot || events[0].ID.PID != worker ||
				events[1].Kind != EventSample || events[1].ID != events[0].ID {
				t.Fatalf("events %+v, want the boot and one sample", events)
			}
			s := events[1].Sample
			if !tc.want {
				if s.HeartbeatAge >= 0 || len(s.Missing) == 0 || len(warns) == 0 {
					t.Errorf("ambiguous heartbeat was assigned: %+v, warnings %q", s, warns)
				}
				return
			}
			if !s.Heartbeats || s.HeartbeatAge < 4*time.Second || s.HeartbeatAge > 7*time.Second {
				t.Errorf("heartbeat from the master: age %v beats %v (missing %v)", s.HeartbeatAge, s.Heartbeats, s.Missing)
			}
		})
	}
}
