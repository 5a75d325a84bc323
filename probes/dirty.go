package probes

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Gunicorn 25+ can run a pool of "dirty" workers for long blocking work (--dirty-app,
// --dirty-workers): the master forks a dirty arbiter, a child of the master like the HTTP
// workers, and the arbiter forks the dirty workers, the master's grandchildren. Each dirty worker
// has a heartbeat file made by the arbiter before the fork, beaten every --dirty-timeout/2 by the
// worker's own event loop and checked by the arbiter against --dirty-timeout
// (gunicorn/dirty/arbiter.py and worker.py, read at 26.2.2).
//
// Which child of the master is what is read from their heartbeat files, never from a line or a
// process title: the master makes each HTTP worker's heartbeat file before it forks that worker
// and holds it while the worker lives, so an HTTP worker is born holding a heartbeat file its
// parent holds too and no older sibling holds. The arbiter holds none of the master's at its
// first start (it is forked before the HTTP workers), and only older siblings' when the master
// respawns it later (a forked process inherits every open file): it owns no heartbeat file of
// its own. A child of the master that owns none is therefore not an HTTP worker; it is the dirty
// arbiter once a child of its own owns a heartbeat file it holds. Dirty workers are told apart
// from their siblings' files the same way: unlike HTTP workers, Gunicorn's dirty workers never
// close the heartbeat files of the siblings forked before them.

// Role says which of Gunicorn's pools a worker belongs to.
type Role string

// The roles. An HTTP worker's is empty, so the events and flight records of a Gunicorn without
// dirty workers read as they always did.
const (
	RoleHTTP  Role = ""      // a worker of the master, serving HTTP
	RoleDirty Role = "dirty" // a dirty worker, a child of the dirty arbiter (Gunicorn 25+)
)

// DirtyCall is what one dirty worker was doing when an HTTP worker, late, waited on the dirty
// arbiter's socket: its latest hot sample and its Python stack (nil when none could be taken).
type DirtyCall struct {
	ID     ID       `json:"id"`
	Sample Sample   `json:"sample"`
	Stack  *PyStack `json:"python_stack,omitempty"`
}

// fileID identifies a file across processes.
type fileID struct{ dev, ino uint64 }

// heartbeatFiles lists pid's Gunicorn heartbeat files (wgunicorn-*, by fd) with the file each
// refers to. complete is false when one of them could not be identified (it is then left out).
func (f FS) heartbeatFiles(pid int) (files map[int]fileID, complete bool, err error) {
	fds, err := f.heartbeatFDs(pid)
	if err != nil {
		return nil, false, err
	}
	links := make(map[int]string, len(fds))
	for _, fd := range fds {
		links[fd] = f.path(pid, "fd", strconv.Itoa(fd))
	}
	files, complete = identify(links)
	return files, complete, nil
}

// identify stats each fd link (following it to the file); complete is false when one could not be.
func identify(links map[int]string) (map[int]fileID, bool) {
	files := make(map[int]fileID, len(links))
	complete := true
	for fd, link := range links {
		var st unix.Stat_t
		if err := unix.Stat(link, &st); err != nil {
			complete = false
			continue
		}
		files[fd] = fileID{dev: uint64(st.Dev), ino: st.Ino}
	}
	return files, complete
}

// ownHeartbeat picks a process's own heartbeat file among those it holds: one its parent holds
// too and that no older sibling claimed. n is how many such files there are; fd and id are set
// only when there is exactly one (two: a sibling died and its file is not closed yet).
func ownHeartbeat(files map[int]fileID, parent, claimed map[fileID]bool) (fd int, id fileID, n int) {
	fd = -1
	for d, f := range files {
		if parent[f] && !claimed[f] {
			fd, id = d, f
			n++
		}
	}
	if n != 1 {
		return -1, fileID{}, n
	}
	return fd, id, 1
}

// idSet turns a process's heartbeat files into a set.
func idSet(files map[int]fileID) map[fileID]bool {
	out := make(map[fileID]bool, len(files))
	for _, f := range files {
		out[f] = true
	}
	return out
}

// childKind is what a new child of the master is.
type childKind int

const (
	childHTTP  childKind = iota // an HTTP worker (or a child gwrap cannot tell: as before, a worker)
	childOther                  // not an HTTP worker: the dirty arbiter, or a process a hook started
)

// classifyChild tells whether a new child of the master is an HTTP worker, and when it is and its
// own heartbeat file was found, sets it on wk. masterFiles is the master's heartbeat files (nil:
// unreadable), claimed the files the HTTP workers already tracked own.
func (f FS) classifyChild(wk *worker, masterFiles map[int]fileID, claimed map[fileID]bool) childKind {
	files, complete, err := f.heartbeatFiles(wk.id.PID)
	kind, fd, id := childRole(files, complete, err, masterFiles, claimed)
	if kind == childHTTP && fd >= 0 {
		wk.hbPID, wk.hbFD, wk.hbTried, wk.own = wk.id.PID, fd, true, id
	}
	return kind
}

// childRole is the rule of classifyChild, on a child's heartbeat files as read (err: its fd table
// could not be read; complete false: one file could not be identified). Without positive evidence
// it is an HTTP worker, as every child of the master was before dirty workers existed: an
// unreadable fd table (another uid: the master's gives its heartbeat later), a file that cannot
// be identified, an unreadable master. It is not an HTTP worker when it was born holding no
// heartbeat file at all, or holds only files its older siblings own. fd is its own heartbeat
// file's, −1 when not told.
func childRole(files map[int]fileID, complete bool, err error, masterFiles map[int]fileID, claimed map[fileID]bool) (childKind, int, fileID) {
	switch {
	case err != nil:
		return childHTTP, -1, fileID{}
	case len(files) == 0 && complete:
		return childOther, -1, fileID{}
	case masterFiles == nil || !complete:
		return childHTTP, -1, fileID{}
	}
	fd, id, n := ownHeartbeat(files, idSet(masterFiles), claimed)
	if n == 0 {
		return childOther, -1, fileID{} // it holds only older siblings' files: forked by the master later
	}
	return childHTTP, fd, id // fd −1 when two were left: found later, as before
}

// dirtyWatch is the watcher's view of the dirty pool (Run's goroutine only).
type dirtyWatch struct {
	on      bool       // the master runs a dirty arbiter: its children are classified
	others  map[int]ID // children of the master that are not HTTP workers
	arbiter ID         // the dirty arbiter; PID 0 until found
	sockets []string   // the paths of its listening unix sockets (what an HTTP worker calls it on)
	fs      FS         // fs, with the arbiter's stat and children file kept open
	workers map[int]*tracked
}

func newDirtyWatch(fs FS) *dirtyWatch {
	d := &dirtyWatch{others: map[int]ID{}, workers: map[int]*tracked{}, fs: fs}
	d.fs.master = newMasterFiles() // a cache of its own: the master's stays the master's
	return d
}

func (d *dirtyWatch) close() {
	for _, t := range d.workers {
		t.w.close()
	}
	d.fs.master.mu.Lock()
	d.fs.master.close()
	d.fs.master.mu.Unlock()
}

// childrenOf lists pid's children from every one of its threads' children files (the slow path:
// for a child of the master not known to be the arbiter yet).
func (f FS) childrenOf(pid int) []int {
	tasks, err := os.ReadDir(f.path(pid, "task"))
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(f.path(pid, "task"), t.Name(), "children"))
		if err != nil {
			continue
		}
		for _, p := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(p); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// isArbiter reports whether a child of the master that is not an HTTP worker is the dirty
// arbiter: its process title says so (with setproctitle installed), or, unless it is a new master
// a USR2 started, one of its children owns a heartbeat file it holds (a dirty worker).
func (f FS) isArbiter(master, pid int, masterFiles map[int]fileID) bool {
	if b, err := os.ReadFile(f.path(pid, "cmdline")); err == nil && strings.Contains(string(b), "dirty-arbiter") {
		return true
	}
	// A new master that a USR2 exec'd has workers of its own; Gunicorn hands it the old master's
	// pid in its environment (the arbiter, forked without an exec, shows the master's).
	if b, err := os.ReadFile(f.path(pid, "environ")); err == nil && strings.Contains("\x00"+string(b), "\x00GUNICORN_PID="+strconv.Itoa(master)+"\x00") {
		return false
	}
	kids := f.childrenOf(pid)
	if len(kids) == 0 {
		return false
	}
	mine, _, err := f.heartbeatFiles(pid)
	if err != nil || len(mine) == 0 {
		return false
	}
	parent := idSet(mine)
	exclude := idSet(masterFiles)
	for _, k := range kids {
		files, _, err := f.heartbeatFiles(k)
		if err != nil {
			continue
		}
		if _, _, n := ownHeartbeat(files, parent, exclude); n > 0 {
			return true
		}
	}
	return false
}

// listeningUnix lists the paths of pid's listening unix sockets.
func (f FS) listeningUnix(pid int, now time.Time) []string {
	d, err := f.Deep(pid, now)
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range d.Sockets {
		if s.Proto == "unix" && s.State == "LISTEN" && s.Local != "" {
			out = append(out, s.Local)
		}
	}
	return out
}

// sortByStart orders newly opened workers by start time: a process forked earlier claims its own
// heartbeat file before a younger sibling that still holds it is looked at.
func sortByStart(ws []*worker) {
	sort.Slice(ws, func(i, j int) bool {
		if ws[i].id.StartTime != ws[j].id.StartTime {
			return ws[i].id.StartTime < ws[j].id.StartTime
		}
		return ws[i].id.PID < ws[j].id.PID
	})
}

// sweepOthers looks at the children of the master that are not HTTP workers: those gone (or
// whose pid a new process took) are forgotten (the arbiter's end is an event), and while no
// arbiter is known, each is checked for being it.
func (w *Watcher) sweepOthers(master int, seen map[int]bool, listed bool, masterFiles func() map[int]fileID, now time.Time, emit func(Event)) {
	d := w.dirty
	for pid, id := range d.others {
		if !listed {
			break
		}
		if seen[pid] {
			if cur, err := w.fs.ID(pid); err == nil && cur == id {
				continue
			}
		}
		delete(d.others, pid)
		if id == d.arbiter {
			emit(Event{Kind: EventArbiterGone, ID: id, Time: now})
			d.arbiter, d.sockets = ID{}, nil
		}
	}
	if d.arbiter.PID != 0 {
		return
	}
	for pid, id := range d.others {
		if w.fs.isArbiter(master, pid, masterFiles()) {
			d.arbiter = id
			d.sockets = w.fs.listeningUnix(pid, now)
			emit(Event{Kind: EventArbiter, ID: id, Time: now, DirtySockets: d.sockets, Timeout: w.dirtyTimeout()})
			return
		}
	}
}

// discoverDirty lists the arbiter's children, opens the new ones and samples every dirty worker.
func (w *Watcher) discoverDirty(masterFiles func() map[int]fileID, now time.Time, emit func(Event)) {
	d := w.dirty
	if d.arbiter.PID == 0 {
		w.sampleOrphans(now, emit)
		return
	}
	kids, err := d.fs.ChildPIDs(d.arbiter.PID)
	if err != nil {
		w.sampleOrphans(now, emit)
		return
	}
	seen := make(map[int]bool, len(kids))
	var fresh []*worker
	for _, pid := range kids {
		seen[pid] = true
		if _, ok := d.workers[pid]; ok {
			continue
		}
		if wk, err := openWorker(w.fs, pid); err == nil {
			fresh = append(fresh, wk)
		}
	}
	for _, wk := range fresh {
		wk.hbTried = true // its own table holds its older siblings' files too: never its lowest fd
		d.workers[wk.id.PID] = &tracked{w: wk, role: RoleDirty}
		emit(Event{Kind: EventBoot, ID: wk.id, Time: now, Timeout: w.dirtyTimeout(), Role: RoleDirty})
	}
	w.dirtyHeartbeats(masterFiles)
	for pid, t := range d.workers {
		if !seen[pid] && t.w.parent() == d.arbiter.PID {
			w.vanish(pid, t, d.workers, emit)
			continue
		}
		w.sampleOne(pid, t, d.workers, now, emit)
	}
}

// dirtyHeartbeats finds the own heartbeat file of each dirty worker that has none yet, oldest
// first: the one the arbiter holds that no older sibling claimed (and not one of the master's: a
// respawned arbiter holds the HTTP workers' files too). A worker left with two (a sibling died and
// the arbiter has not reaped it yet) is tried again at the next sweep.
func (w *Watcher) dirtyHeartbeats(masterFiles func() map[int]fileID) {
	d := w.dirty
	var todo []*worker
	claimed := idSet(masterFiles())
	for _, t := range d.workers {
		if t.w.own != (fileID{}) {
			claimed[t.w.own] = true
		} else if t.w.hbFD < 0 {
			todo = append(todo, t.w)
		}
	}
	if len(todo) == 0 {
		return
	}
	arb, _, err := w.fs.heartbeatFiles(d.arbiter.PID)
	if err != nil {
		return
	}
	parent := idSet(arb)
	sortByStart(todo)
	for _, wk := range todo {
		files, _, err := w.fs.heartbeatFiles(wk.id.PID)
		if err != nil {
			w.warn("dirty-heartbeat", fmt.Sprintf("cannot read a dirty worker's fd table (%v): its heartbeat age is missing", err))
			continue
		}
		if fd, id, n := ownHeartbeat(files, parent, claimed); n == 1 {
			wk.hbPID, wk.hbFD, wk.own = wk.id.PID, fd, id
			claimed[id] = true
		}
	}
}

// sampleOrphans samples the dirty workers left when their arbiter is gone (Gunicorn's dirty
// workers do not watch their parent: they run on, orphaned), until they end.
func (w *Watcher) sampleOrphans(now time.Time, emit func(Event)) {
	for pid, t := range w.dirty.workers {
		w.sampleOne(pid, t, w.dirty.workers, now, emit)
	}
}

// parent reads the process's parent pid from its stat file (0 when unreadable).
func (w *worker) parent() int {
	b, err := w.pread(w.stat)
	if err != nil {
		return 0
	}
	s, err := parseStat(b)
	if err != nil || s.starttime != w.id.StartTime {
		return 0
	}
	return s.ppid
}

// dirtyCalls takes, for an HTTP worker late while waiting on the dirty arbiter's socket, what
// every dirty worker was doing: its latest sample and its Python stack (at most maxDirtyCalls).
func (w *Watcher) dirtyCalls(d *Deep) []DirtyCall {
	if w.dirty == nil || len(w.dirty.sockets) == 0 || d == nil || !waitsOn(d.WaitingOn(), w.dirty.sockets) {
		return nil
	}
	pids := make([]int, 0, len(w.dirty.workers))
	for pid := range w.dirty.workers {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	out := []DirtyCall{}
	for _, pid := range pids[:min(len(pids), maxDirtyCalls)] {
		t := w.dirty.workers[pid]
		c := DirtyCall{ID: t.w.id, Sample: t.last}
		if w.opt.Stack != nil {
			c.Stack = w.opt.Stack(pid)
		}
		out = append(out, c)
	}
	return out
}

// maxDirtyCalls bounds the dirty workers whose stacks one late HTTP worker costs.
const maxDirtyCalls = 16

// waitsOn reports whether a worker's waiting_on list names one of the arbiter's sockets.
func waitsOn(waiting, sockets []string) bool {
	for _, wo := range waiting {
		for _, s := range sockets {
			if wo == "unix "+s {
				return true
			}
		}
	}
	return false
}

// followStacks takes a deep sample and the Python stack of each dirty worker the engine follows
// (a dirty action ran past --dirty-timeout: is it still running?), once a sweep.
func (w *Watcher) followStacks(now time.Time, emit func(Event)) {
	w.mu.Lock()
	var pids []int
	for pid := range w.follow {
		pids = append(pids, pid)
	}
	w.mu.Unlock()
	sort.Ints(pids)
	for _, pid := range pids {
		t, ok := w.dirty.workers[pid]
		if !ok {
			continue
		}
		d := w.takeDeep(t.w.id, now)
		if d == nil {
			continue
		}
		if wc := w.fs.actionWchan(pid); wc != "" {
			d.Wchan = wc // the process's wchan is its event loop's, always in epoll
		}
		w.takeStack(t.w.id, d)
		emit(Event{Kind: EventStack, ID: t.w.id, Time: now, Sample: t.last, Deep: d, Timeout: w.dirtyTimeout(), Role: RoleDirty})
	}
}

// actionWchan is where a dirty worker's action waits: the wait channel of one of its threads
// other than the main one (which runs the event loop), one not waiting on a futex when there is
// one (the executor's idle threads wait on a futex; so does an action waiting on a lock), and ""
// when one of them is running (an action computing has no wait channel, "0").
func (f FS) actionWchan(pid int) string {
	tasks, err := os.ReadDir(f.path(pid, "task"))
	if err != nil {
		return ""
	}
	futex, running := "", false
	for _, t := range tasks {
		if t.Name() == strconv.Itoa(pid) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(f.path(pid, "task"), t.Name(), "wchan"))
		wc := strings.TrimSpace(string(b))
		switch {
		case err != nil || wc == "":
		case wc == "0":
			running = true
		case strings.HasPrefix(wc, "futex"):
			futex = wc
		default:
			return wc
		}
	}
	if running {
		return ""
	}
	return futex
}

// Follow asks the watcher to take a dirty worker's stack every sweep (on), or to stop (off): the
// engine follows an action Gunicorn gave up on, to say when it finally ends. Safe from any
// goroutine.
func (w *Watcher) Follow(pid int, on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if on {
		w.follow[pid] = true
	} else {
		delete(w.follow, pid)
	}
}

// reclassify looks again, once dirty workers are known to run, at the children of the master
// taken for workers before: those that are not move to the others, without a vanish.
func (w *Watcher) reclassify(workers map[int]*tracked, masterFiles func() map[int]fileID) {
	var ws []*worker
	for _, t := range workers {
		ws = append(ws, t.w)
	}
	sortByStart(ws)
	claimed := map[fileID]bool{}
	for _, wk := range ws {
		files, complete, err := w.fs.heartbeatFiles(wk.id.PID)
		kind, fd, id := childRole(files, complete, err, masterFiles(), claimed)
		if kind == childOther {
			delete(workers, wk.id.PID)
			w.dirty.others[wk.id.PID] = wk.id
			wk.close()
			continue
		}
		if fd >= 0 {
			wk.hbPID, wk.hbFD, wk.hbTried, wk.own = wk.id.PID, fd, true, id
			if wk.hb >= 0 {
				unix.Close(wk.hb) // it may have been a sibling's file: opened afresh
				wk.hb = -1
			}
			claimed[id] = true
		}
	}
}

func (w *Watcher) dirtyTimeout() time.Duration { return w.limits.Load().DirtyTimeout }

// limitOf is the timeout a worker's heartbeat is judged against: --timeout, or --dirty-timeout
// for a dirty worker.
func (w *Watcher) limitOf(t *tracked) time.Duration {
	if t.role == RoleDirty {
		return w.dirtyTimeout()
	}
	return w.timeout()
}

// normalBeatOf is how long a healthy worker stays silent: a dirty worker's loop beats every
// --dirty-timeout/2.
func (w *Watcher) normalBeatOf(t *tracked) time.Duration {
	if t.role == RoleDirty {
		return w.dirtyTimeout() / 2
	}
	return w.beat()
}

func (t *tracked) String() string { return fmt.Sprintf("%s worker %d", t.role, t.w.id.PID) }
