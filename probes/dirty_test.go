package probes

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestChildRole(t *testing.T) {
	a, b, c := fileID{1, 10}, fileID{1, 11}, fileID{1, 12}
	master := map[int]fileID{5: a, 6: b}
	for _, tc := range []struct {
		name     string
		files    map[int]fileID
		complete bool
		err      error
		master   map[int]fileID
		claimed  map[fileID]bool
		want     childKind
		fd       int
	}{
		{"an HTTP worker owns its file", map[int]fileID{5: a}, true, nil, master, nil, childHTTP, 5},
		{"a younger one still holds its sibling's", map[int]fileID{5: a, 6: b}, true, nil, master, map[fileID]bool{a: true}, childHTTP, 6},
		{"the arbiter at its first start holds none", map[int]fileID{}, true, nil, master, nil, childOther, -1},
		{"the arbiter holds only its dirty workers'", map[int]fileID{9: c}, true, nil, master, nil, childOther, -1},
		{"a respawned arbiter holds only older siblings'", map[int]fileID{5: a, 6: b, 9: c}, true, nil, master, map[fileID]bool{a: true, b: true}, childOther, -1},
		{"an unreadable fd table: a worker, as before", nil, false, os.ErrPermission, master, nil, childHTTP, -1},
		{"an unreadable master: a worker", map[int]fileID{5: a}, true, nil, nil, nil, childHTTP, -1},
		{"a file not identified: a worker", map[int]fileID{}, false, nil, master, nil, childHTTP, -1},
		{"two unclaimed: a worker, its file not told", map[int]fileID{5: a, 6: b}, true, nil, master, nil, childHTTP, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kind, fd, _ := childRole(tc.files, tc.complete, tc.err, tc.master, tc.claimed)
			if kind != tc.want || fd != tc.fd {
				t.Errorf("kind %d fd %d, want %d %d", kind, fd, tc.want, tc.fd)
			}
		})
	}
}

// procTree writes a fake /proc for the watcher: each process's stat, status, schedstat, cmdline,
// environ, children and fd links; heartbeat files are real files (named wgunicorn-*) so that the
// links identify them as the kernel's do.
type procTree struct {
	t    *testing.T
	root string
	hb   string
}

func newProcTree(t *testing.T) *procTree {
	return &procTree{t: t, root: t.TempDir(), hb: t.TempDir()}
}

func (p *procTree) must(err error) {
	p.t.Helper()
	if err != nil {
		p.t.Fatal(err)
	}
}

// heartbeat makes a heartbeat file and returns its path.
func (p *procTree) heartbeat(name string) string {
	path := filepath.Join(p.hb, "wgunicorn-"+name)
	p.must(os.WriteFile(path, nil, 0o600))
	return path
}

// proc writes one process: its parent, start time, children, environment and fd links.
func (p *procTree) proc(pid, ppid int, start uint64, kids []int, environ string, fds map[int]string) {
	dir := filepath.Join(p.root, strconv.Itoa(pid))
	task := filepath.Join(dir, "task", strconv.Itoa(pid))
	p.must(os.MkdirAll(task, 0o755))
	p.must(os.MkdirAll(filepath.Join(dir, "fd"), 0o755))
	stat := strconv.Itoa(pid) + " (python3) S " + strconv.Itoa(ppid) + " 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 " + strconv.FormatUint(start, 10) + " 0 0\n"
	p.must(os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644))
	p.must(os.WriteFile(filepath.Join(dir, "status"), []byte("RssAnon:\t100 kB\n"), 0o644))
	p.must(os.WriteFile(filepath.Join(dir, "schedstat"), []byte("1 2 3\n"), 0o644))
	p.must(os.WriteFile(filepath.Join(dir, "cmdline"), []byte("/usr/bin/python3\x00-m\x00gunicorn\x00app:app\x00"), 0o644))
	p.must(os.WriteFile(filepath.Join(dir, "environ"), []byte(environ), 0o644))
	var ks []string
	for _, k := range kids {
		ks = append(ks, strconv.Itoa(k))
	}
	p.must(os.WriteFile(filepath.Join(task, "children"), []byte(strings.Join(ks, " ")+" "), 0o644))
	for fd, target := range fds {
		p.must(os.Symlink(target, filepath.Join(dir, "fd", strconv.Itoa(fd))))
	}
}

// TestDiscoverDirtyPool: from the heartbeat files alone, the watcher tells the master's HTTP
// workers from the dirty arbiter (never a worker) and from a process a hook started, finds the
// arbiter's dirty workers and each one's own heartbeat file among its older siblings', and does
// not take a new master a USR2 started for the arbiter.
func TestDiscoverDirtyPool(t *testing.T) {
	p := newProcTree(t)
	hbA, hbB := p.heartbeat("a"), p.heartbeat("b")     // the HTTP workers'
	hbD1, hbD2 := p.heartbeat("d1"), p.heartbeat("d2") // the dirty workers'
	hbN := p.heartbeat("n")                            // the new master's worker's
	// The master; its HTTP workers 101 and 102 (102 still holds 101's file: it has not closed
	// its siblings' yet); the arbiter 103, respawned (it holds the HTTP workers' files too); a
	// process a hook started (104); a new master a USR2 exec'd (105) with its worker 106.
	p.proc(100, 1, 1000, []int{101, 102, 103, 104, 105}, "PATH=/bin\x00", map[int]string{5: hbA, 6: hbB})
	p.proc(101, 100, 1001, nil, "", map[int]string{5: hbA})
	p.proc(102, 100, 1002, nil, "", map[int]string{5: hbA, 6: hbB})
	p.proc(103, 100, 1003, []int{110, 111}, "PATH=/bin\x00", map[int]string{5: hbA, 6: hbB, 7: hbD1, 8: hbD2})
	p.proc(104, 100, 1004, nil, "", map[int]string{0: "/dev/null"})
	p.proc(105, 100, 1005, []int{106}, "GUNICORN_PID=100\x00", map[int]string{9: hbN})
	p.proc(106, 105, 1006, nil, "", map[int]string{9: hbN})
	// The dirty workers: 111 holds 110's file too (dirty workers never close their siblings').
	p.proc(110, 103, 1010, nil, "", map[int]string{5: hbA, 6: hbB, 7: hbD1})
	p.proc(111, 103, 1011, nil, "", map[int]string{5: hbA, 6: hbB, 7: hbD1, 8: hbD2})

	w := NewWatcher(NewFS(p.root), Options{Limits: Limits{Timeout: 30 * time.Second, Dirty: true, DirtyTimeout: 300 * time.Second}})
	var evs []Event
	workers := map[int]*tracked{}
	for i := 0; i < 2; i++ { // the arbiter's children are looked at from the sweep after it was found
		w.discover(100, workers, time.Now(), func(e Event) { evs = append(evs, e) })
	}
	var boots, arbiters []string
	for _, e := range evs {
		switch e.Kind {
		case EventBoot:
			boots = append(boots, strconv.Itoa(e.ID.PID)+string(e.Role))
		case EventArbiter:
			arbiters = append(arbiters, strconv.Itoa(e.ID.PID))
		}
	}
	sort.Strings(boots)
	if strings.Join(boots, ",") != "101,102,110dirty,111dirty" || strings.Join(arbiters, ",") != "103" {
		t.Fatalf("boots %v, arbiters %v", boots, arbiters)
	}
	for pid, fd := range map[int]int{101: 5, 102: 6} {
		if got := workers[pid].w.hbFD; got != fd {
			t.Errorf("HTTP worker %d: heartbeat fd %d, want %d", pid, got, fd)
		}
	}
	for pid, fd := range map[int]int{110: 7, 111: 8} {
		tr := w.dirty.workers[pid]
		if tr == nil || tr.w.hbFD != fd || tr.role != RoleDirty || tr.last.HeartbeatAge < 0 {
			t.Errorf("dirty worker %d: %+v, want heartbeat fd %d", pid, tr, fd)
		}
	}
	// A dirty worker's lateness is judged against --dirty-timeout.
	for _, e := range evs {
		if e.Kind == EventSample && e.Role == RoleDirty && e.Timeout != 300*time.Second {
			t.Errorf("dirty sample judged against %v", e.Timeout)
		}
	}
	// The load: two HTTP workers, two dirty workers.
	p.must(os.MkdirAll(filepath.Join(p.root, "100", "net"), 0o755))
	p.must(os.WriteFile(filepath.Join(p.root, "100", "net", "tcp"), []byte(netTCP), 0o644))
	s, err := NewFS(p.root).Saturation(100, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if s.Workers != 2 || s.Dirty == nil || s.Dirty.Workers != 2 || s.Dirty.HeartbeatAgeMax < 0 {
		t.Errorf("saturation %+v dirty %+v", s, s.Dirty)
	}

	// The arbiter ends: said once; its dirty workers, orphaned, are still sampled.
	p.must(os.RemoveAll(filepath.Join(p.root, "103")))
	p.must(os.WriteFile(filepath.Join(p.root, "100", "task", "100", "children"), []byte("101 102 104 105 "), 0o644))
	evs = nil
	w.discover(100, workers, time.Now(), func(e Event) { evs = append(evs, e) })
	gone, sampled := 0, 0
	for _, e := range evs {
		switch {
		case e.Kind == EventArbiterGone && e.ID.PID == 103:
			gone++
		case e.Kind == EventSample && e.Role == RoleDirty:
			sampled++
		case e.Kind == EventVanish:
			t.Errorf("%d vanished", e.ID.PID)
		}
	}
	if gone != 1 || sampled != 2 {
		t.Errorf("arbiter gone %d times, %d orphans sampled", gone, sampled)
	}
}

// TestDirtyOffThenOn: until the master is known to run a dirty arbiter, every child is a worker,
// as always (a fake master's children hold no heartbeat file); once it is (SetLimits), the child
// that is the arbiter stops being one, without a vanish, and is found as the arbiter.
func TestDirtyOffThenOn(t *testing.T) {
	p := newProcTree(t)
	hbA, hbD := p.heartbeat("a"), p.heartbeat("d")
	p.proc(100, 1, 1000, []int{101, 102, 103}, "", map[int]string{5: hbA})
	p.proc(101, 100, 1001, nil, "", map[int]string{5: hbA})
	p.proc(102, 100, 1002, []int{110}, "", map[int]string{7: hbD})
	p.proc(103, 100, 1003, nil, "", nil) // holds no heartbeat file at all
	p.proc(110, 102, 1010, nil, "", map[int]string{7: hbD})
	w := NewWatcher(NewFS(p.root), Options{Limits: Limits{Timeout: 30 * time.Second}})
	workers := map[int]*tracked{}
	var evs []Event
	emit := func(e Event) { evs = append(evs, e) }
	w.discover(100, workers, time.Now(), emit)
	if len(workers) != 3 {
		t.Fatalf("dirty off: %d workers, want every child", len(workers))
	}
	w.SetLimits(Limits{Timeout: 30 * time.Second, Dirty: true, DirtyTimeout: 60 * time.Second})
	evs = nil
	w.discover(100, workers, time.Now(), emit)
	w.discover(100, workers, time.Now(), emit)
	kinds := map[EventKind][]int{}
	for _, e := range evs {
		kinds[e.Kind] = append(kinds[e.Kind], e.ID.PID)
	}
	if _, ok := workers[102]; ok || len(kinds[EventVanish]) != 0 || fmt.Sprint(kinds[EventArbiter]) != "[102]" || fmt.Sprint(kinds[EventBoot]) != "[110]" {
		t.Errorf("dirty on: workers %v, events %v", workers, kinds)
	}
	// 103 holds no heartbeat file: not an HTTP worker once dirty workers run.
	if _, ok := workers[103]; ok {
		t.Error("a child with no heartbeat file is still a worker")
	}
}

// TestActionWchan: a dirty worker's action waits where one of its threads other than the main
// one waits, a futex (an idle executor thread) only when no other does.
func TestActionWchan(t *testing.T) {
	p := newProcTree(t)
	p.proc(300, 1, 1000, nil, "", nil)
	for tid, wc := range map[string]string{"300": "do_epoll_wait", "301": "futex_wait_queue", "302": "hrtimer_nanosleep"} {
		dir := filepath.Join(p.root, "300", "task", tid)
		p.must(os.MkdirAll(dir, 0o755))
		p.must(os.WriteFile(filepath.Join(dir, "wchan"), []byte(wc), 0o644))
	}
	fs := NewFS(p.root)
	if got := fs.actionWchan(300); got != "hrtimer_nanosleep" {
		t.Errorf("got %q", got)
	}
	p.must(os.WriteFile(filepath.Join(p.root, "300", "task", "302", "wchan"), []byte("0"), 0o644)) // computing
	if got := fs.actionWchan(300); got != "" {
		t.Errorf("computing: got %q", got)
	}
	p.must(os.RemoveAll(filepath.Join(p.root, "300", "task", "302"))) // only the idle executor thread
	if got := fs.actionWchan(300); got != "futex_wait_queue" {
		t.Errorf("idle or on a lock: got %q", got)
	}
}

// TestOtherPIDReused: a child of the master that is not a worker ends and a new worker takes its
// pid: the new process is classified afresh (a sweep later), not ignored under the old one's pid.
func TestOtherPIDReused(t *testing.T) {
	p := newProcTree(t)
	hbA, hbB := p.heartbeat("a"), p.heartbeat("b")
	p.proc(100, 1, 1000, []int{101, 102}, "", map[int]string{5: hbA})
	p.proc(101, 100, 1001, nil, "", map[int]string{5: hbA})
	p.proc(102, 100, 1002, nil, "", nil) // a process a hook started: no heartbeat file
	w := NewWatcher(NewFS(p.root), Options{Limits: Limits{Timeout: 30 * time.Second, Dirty: true, DirtyTimeout: 60 * time.Second}})
	workers := map[int]*tracked{}
	noop := func(Event) {}
	w.discover(100, workers, time.Now(), noop)
	if _, ok := w.dirty.others[102]; !ok || len(workers) != 1 {
		t.Fatalf("others %v workers %d", w.dirty.others, len(workers))
	}
	// 102 ends; the master forks a worker that gets pid 102 (a later start time).
	p.must(os.RemoveAll(filepath.Join(p.root, "102")))
	p.must(os.Symlink(hbB, filepath.Join(p.root, "100", "fd", "6")))
	p.proc(102, 100, 2002, nil, "", map[int]string{6: hbB})
	w.discover(100, workers, time.Now(), noop)
	w.discover(100, workers, time.Now(), noop)
	if tr, ok := workers[102]; !ok || tr.w.id.StartTime != 2002 || tr.w.hbFD != 6 {
		t.Errorf("the new worker 102: %+v (others %v)", tr, w.dirty.others)
	}
}
