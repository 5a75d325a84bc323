package probes

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Watcher. Zero values take the documented defaults.
type Options struct {
	Interval     time.Duration // hot sampling period (1 s)
	FastInterval time.Duration // sampling period of a late worker (100 ms)
	Timeout      time.Duration // Gunicorn's --timeout; 0 disables lateness
	WorkerClass  string        // decides the normal heartbeat period
	LateShares   []float64     // shares of the timeout that make a worker late ({0.5, 0.8})
	Now          func() time.Time
	// Warn is told once per kind of degradation (an unreadable file, a missing heartbeat).
	Warn func(msg string)
	// Stack, when set, takes a late or stuck worker's Python stack with its deep sample (once
	// per silence: the first late share, or the stuck boot). It is called on the watcher's
	// goroutine and must be bounded (a second at most).
	Stack func(pid int) *PyStack
	// Sweep, when set, wraps one sweep per Interval: it is called on the watcher's goroutine
	// with the sweep to run (sample, which emits that sweep's events), from the start of Run
	// (before the master is found) to its end, and must call sample once. gwrap takes the
	// container's cgroup sample there and hands the sweep's events on in one batch, so that an
	// idle gwrap wakes once per interval and wakes nothing else more than once.
	Sweep func(now time.Time, sample func())
}

// Watcher samples a Gunicorn master's workers and hands every sample and every change it sees to
// emit; it keeps only what sampling needs (open files, the previous CPU times, how late each
// worker is). The history of each worker is the receiver's (the engine's worker record).
type Watcher struct {
	fs  FS
	opt Options

	class     atomic.Pointer[string] // the worker class, once Gunicorn's log names it
	timeoutNS atomic.Int64           // Gunicorn's timeout (ns), once the master's own settings are read

	master int   // the master Run found (Run's goroutine only)
	hints  hints // pids Gunicorn's start lines named

	mu     sync.Mutex
	warned map[string]bool
}

// NewWatcher applies the defaults.
func NewWatcher(fs FS, opt Options) *Watcher {
	if opt.Interval <= 0 {
		opt.Interval = time.Second
	}
	if opt.FastInterval <= 0 || opt.FastInterval > opt.Interval {
		opt.FastInterval = min(100*time.Millisecond, opt.Interval)
	}
	if len(opt.LateShares) == 0 {
		opt.LateShares = []float64{0.5, 0.8}
	}
	sort.Float64s(opt.LateShares)
	if opt.Now == nil {
		opt.Now = time.Now
	}
	w := &Watcher{fs: fs, opt: opt, warned: map[string]bool{}}
	w.class.Store(&opt.WorkerClass)
	w.timeoutNS.Store(int64(opt.Timeout))
	return w
}

// SetTimeout changes Gunicorn's timeout the lateness is judged against (the command was a shell
// or a script, and the master's own settings were read once it was found). Safe from any goroutine.
func (w *Watcher) SetTimeout(d time.Duration) { w.timeoutNS.Store(int64(d)) }

func (w *Watcher) timeout() time.Duration { return time.Duration(w.timeoutNS.Load()) }

// SetWorkerClass changes the class that decides the workers' normal heartbeat (Gunicorn's "Using
// worker:" line is the truth when the settings could not be read). Safe from any goroutine.
func (w *Watcher) SetWorkerClass(class string) { w.class.Store(&class) }

// NormalBeat is how long a healthy worker of this class may stay silent: an idle sync or Uvicorn
// worker beats only every timeout/2 (it waits in select for that long); gthread, gevent,
// eventlet, tornado and asgi workers beat about every second.
func NormalBeat(class string, timeout time.Duration) time.Duration {
	c := strings.ToLower(class)
	if c == "" || c == "sync" || strings.Contains(c, "uvicorn") {
		return timeout / 2
	}
	return time.Second
}

// lateAfter is the silence after which a worker is late at this share of the timeout: never
// before its normal beat plus a grace (a tenth of the timeout, between 0.5 s and 2 s), so a
// healthy idle worker is never called late.
func (w *Watcher) lateAfter(share float64) time.Duration {
	t := w.timeout()
	grace := min(2*time.Second, max(500*time.Millisecond, t/10))
	return max(time.Duration(share*float64(t)), NormalBeat(*w.class.Load(), t)+grace)
}

type tracked struct {
	w       *worker
	master  int  // the master whose child it is
	crossed int  // how many LateShares were crossed in this silence
	stuck   bool // EventStuckBoot sent
	last    Sample
}

func (t *tracked) fast() bool { return t.crossed > 0 || t.stuck }

// family is what Run knows of the Gunicorn processes below the command: the master found under
// it, the masters found among a master's children (a USR2 upgrade's new master is its old
// master's child), and the children of a master that are neither workers nor masters yet.
type family struct {
	main   int
	nested map[int]int    // a master found among a master's children → that master
	other  map[int]uint64 // pid → start time of a child that is neither (looked at again while it has children)
}

// masters lists the masters whose children are swept: the main one first.
func (f *family) masters() []int {
	var out []int
	if f.main != 0 {
		out = append(out, f.main)
	}
	nested := make([]int, 0, len(f.nested))
	for pid := range f.nested {
		nested = append(nested, pid)
	}
	sort.Ints(nested)
	return append(out, nested...)
}

// Hint tells the watcher that one of Gunicorn's start lines ("Starting gunicorn", "Listening
// at: … (PID)") named pid as the master's. A hint is never proof (the app can print such a line):
// it counts only for a process whose open files are closed to gwrap (ByHint); any other master
// is confirmed from /proc. Safe from any goroutine.
func (w *Watcher) Hint(pid int) {
	if pid > 0 {
		w.hints.add(pid)
	}
}

// Run samples the workers of the Gunicorn master found at or below root until ctx is done. The
// master is recognised by what it does (FS.FindMaster), and until it is found nothing is a
// worker (a shell running a migration before `exec gunicorn` has children that are not); when
// it is gone, it is looked for again. A master's children are workers when they hold one of its
// heartbeat files; a child that holds heartbeat files of its own children is a master too (a
// USR2 upgrade's new master), whose children are watched the same way. Run returns an error only
// when root cannot be read at all; everything else degrades the samples and is said once
// through Warn.
func (w *Watcher) Run(ctx context.Context, root int, emit func(Event)) error {
	if _, err := os.Stat(w.fs.path(root)); err != nil {
		return fmt.Errorf("command %d: %w", root, err)
	}
	workers := map[int]*tracked{}
	defer func() {
		for _, t := range workers {
			t.w.close()
		}
	}()
	fam := &family{nested: map[int]int{}, other: map[int]uint64{}}
	findEvery := w.opt.FastInterval
	// One timer: the next full sweep, or sooner while a worker is late. An idle gwrap wakes once
	// per Interval here, not ten times.
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	var lastFull, lastSweep time.Time
	for {
		now := w.opt.Now()
		sample := func() {
			if fam.main != 0 && now.Sub(lastFull) < w.opt.Interval-w.opt.FastInterval/2 {
				for pid, t := range workers {
					if t.fast() {
						w.sampleOne(pid, t, workers, now, emit)
					}
				}
				return
			}
			lastFull = now
			if fam.main == 0 {
				if m, ok := w.fs.FindMaster(root, w.hints.has); ok {
					fam.main, w.master = m.PID, m.PID
					delete(fam.nested, m.PID)
					id, _ := w.fs.ID(m.PID)
					id.PID = m.PID
					emit(Event{Kind: EventMaster, ID: id, Time: now, Evidence: m.By})
				}
			}
			w.sweep(fam, workers, now, emit)
		}
		if w.opt.Sweep != nil && now.Sub(lastSweep) >= w.opt.Interval-w.opt.FastInterval/2 {
			lastSweep = now
			w.opt.Sweep(now, sample)
		} else {
			sample()
		}
		next := lastFull.Add(w.opt.Interval).Sub(w.opt.Now())
		for _, t := range workers {
			if t.fast() {
				next = min(next, w.opt.FastInterval)
				break
			}
		}
		if fam.main == 0 {
			// Until the command has exec'd Gunicorn, look again soon, backing off to the sweep.
			next, findEvery = min(next, findEvery), min(2*findEvery, w.opt.Interval)
		} else {
			findEvery = w.opt.FastInterval
		}
		timer.Reset(max(next, time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
	}
}

// sweep lists every master's children, takes on the new ones and samples every worker. A
// worker already tracked is not identified again: its stat file, kept open, refers to its
// process, so its sample fails once that process is gone, even if the pid was reused (the new
// process is then found at the next sweep). The workers of a master that is gone are sampled
// until they are gone too.
func (w *Watcher) sweep(fam *family, workers map[int]*tracked, now time.Time, emit func(Event)) {
	seen := map[int]bool{}
	listed := map[int]bool{}
	for _, m := range fam.masters() {
		var kids []int
		var err error
		if m == fam.main {
			kids, err = w.fs.ChildPIDs(m)
		} else {
			kids, err = w.fs.childrenOf(m)
		}
		if err != nil {
			if gone(err) {
				if m == fam.main {
					fam.main, w.master = 0, 0
				} else {
					delete(fam.nested, m)
				}
				emit(Event{Kind: EventMasterGone, ID: ID{PID: m}, Time: now})
			} else {
				w.warn("children", fmt.Sprintf("cannot list the master's children (%v): workers are not sampled", err))
			}
			continue
		}
		listed[m] = true
		var fresh []int
		for _, pid := range kids {
			seen[pid] = true
			if _, ok := workers[pid]; ok {
				continue
			}
			if _, ok := fam.nested[pid]; ok {
				continue
			}
			if st, ok := fam.other[pid]; ok && !w.mayHaveChanged(pid, st) {
				continue
			}
			fresh = append(fresh, pid)
		}
		if len(fresh) > 0 {
			w.takeOn(fam, m, fresh, workers, now, emit)
		}
	}
	for pid := range fam.other {
		if !seen[pid] {
			delete(fam.other, pid)
		}
	}
	for _, m := range fam.masters() {
		w.heartbeatsFromMaster(m, workers)
	}
	for pid, t := range workers {
		if !seen[pid] && listed[t.master] {
			w.vanish(pid, t, workers, now, emit)
			continue
		}
		w.sampleOne(pid, t, workers, now, emit)
	}
}

// mayHaveChanged reports whether a child once found to be neither worker nor master must be
// looked at again: its pid now names another process, or it has children of its own (a new
// master that forked its first workers).
func (w *Watcher) mayHaveChanged(pid int, start uint64) bool {
	id, err := w.fs.ID(pid)
	if err != nil || id.StartTime != start {
		return true
	}
	kids, _ := w.fs.childrenOf(pid)
	return len(kids) > 0
}

// takeOn classifies new children of master m: workers are tracked, masters watched in turn.
func (w *Watcher) takeOn(fam *family, m int, fresh []int, workers map[int]*tracked, now time.Time, emit func(Event)) {
	roles := w.fs.classify(m, fresh)
	for _, pid := range fresh {
		switch roles[pid] {
		case RoleWorker:
			wk, err := openWorker(w.fs, pid)
			if err != nil {
				continue
			}
			delete(fam.other, pid)
			workers[pid] = &tracked{w: wk, master: m}
			emit(Event{Kind: EventBoot, ID: wk.id, Time: now, Timeout: w.timeout(), Master: m})
		case RoleMaster:
			id, err := w.fs.ID(pid)
			if err != nil {
				continue
			}
			delete(fam.other, pid)
			fam.nested[pid] = m
			emit(Event{Kind: EventMaster, ID: id, Time: now, Parent: m, Evidence: ByHeartbeats})
		case RoleOther:
			if id, err := w.fs.ID(pid); err == nil {
				fam.other[pid] = id.StartTime
			}
		}
	}
}

// heartbeatsFromMaster gives workers whose fd table is unreadable (switched to another uid by
// --user) their heartbeat from the master's fd table, which holds every live worker's heartbeat
// file at the same fd number as that worker. Which master fd belongs to which worker cannot be
// read, so it is assigned only when unambiguous: exactly one of the master's heartbeat fds is
// unclaimed and exactly one worker lacks a heartbeat. All workers forked in one sweep stay
// unresolved (their heartbeat is Missing) until the others are resolved or replaced one by one.
func (w *Watcher) heartbeatsFromMaster(master int, workers map[int]*tracked) {
	var lacking []*worker
	claimed := map[int]bool{}
	for _, t := range workers {
		if t.master != master {
			continue
		}
		t.w.findHeartbeat()
		switch {
		case t.w.hbFD >= 0: // the same number in the worker and in the master
			claimed[t.w.hbFD] = true
		case t.w.hbFD < 0 && t.w.fdDenied:
			lacking = append(lacking, t.w)
		}
	}
	if len(lacking) == 0 {
		return
	}
	fds, err := w.fs.heartbeatFDs(master)
	if err != nil {
		w.warn("master-fd", fmt.Sprintf("the workers' fd tables are unreadable and so is the master's (%v): heartbeat ages are missing", err))
		return
	}
	var free []int
	for _, fd := range fds {
		if !claimed[fd] {
			free = append(free, fd)
		}
	}
	if len(free) == 1 && len(lacking) == 1 {
		lacking[0].hbPID, lacking[0].hbFD = master, free[0]
	}
}

func (w *Watcher) sampleOne(pid int, t *tracked, workers map[int]*tracked, now time.Time, emit func(Event)) {
	s, err := t.w.sample(now)
	if err != nil {
		w.vanish(pid, t, workers, now, emit)
		return
	}
	for _, m := range s.Missing {
		w.warn(m, fmt.Sprintf("cannot read the workers' %s; that evidence is missing from reports", m))
	}
	prevAge := t.last.HeartbeatAge
	t.last = s
	emit(Event{Kind: EventSample, ID: t.w.id, Time: now, Sample: s, Timeout: w.timeout()})
	w.judge(t, s, prevAge, now, emit)
}

// judge emits late, recovered and stuck-boot events.
func (w *Watcher) judge(t *tracked, s Sample, prevAge time.Duration, now time.Time, emit func(Event)) {
	if w.timeout() <= 0 || s.HeartbeatAge < 0 {
		return
	}
	id := t.w.id
	if !s.Heartbeats {
		if s.HeartbeatAge > w.timeout() && !t.stuck {
			t.stuck = true
			d := w.takeDeep(id, now)
			w.takeStack(id, d)
			emit(Event{Kind: EventStuckBoot, ID: id, Time: now, Sample: s, Deep: d, Timeout: w.timeout(),
				Saturation: w.saturation(now)})
		}
		return
	}
	if t.stuck {
		// It finished booting after all (Gunicorn ≥ 22 never times out a booting worker).
		t.stuck = false
		emit(Event{Kind: EventRecovered, ID: id, Time: now, Sample: s, Timeout: w.timeout()})
		return
	}
	if t.crossed > 0 && s.HeartbeatAge < prevAge {
		// The age fell: the worker beat again.
		t.crossed = 0
		emit(Event{Kind: EventRecovered, ID: id, Time: now, Sample: s, Timeout: w.timeout()})
		return
	}
	for t.crossed < len(w.opt.LateShares) && s.HeartbeatAge >= w.lateAfter(w.opt.LateShares[t.crossed]) {
		share := w.opt.LateShares[t.crossed]
		t.crossed++
		d := w.takeDeep(id, now)
		if t.crossed == 1 {
			w.takeStack(id, d)
		}
		emit(Event{Kind: EventLate, ID: id, Time: now, Sample: s, Deep: d, Share: share, Timeout: w.timeout(),
			Saturation: w.saturation(now)})
	}
}

func (w *Watcher) takeDeep(id ID, now time.Time) *Deep {
	d, err := w.fs.Deep(id.PID, now)
	if err != nil {
		return nil
	}
	for _, m := range d.Missing {
		w.warn("deep-"+m, fmt.Sprintf("cannot read the workers' %s; deep samples lack it", m))
	}
	return &d
}

// saturation reads the server's load (busy workers, listen queues) for a late worker's event.
func (w *Watcher) saturation(now time.Time) *Saturation {
	if w.master == 0 {
		return nil
	}
	s, err := w.fs.Saturation(w.master, now)
	if err != nil {
		w.warn("saturation", fmt.Sprintf("cannot read the master's listen queues (%v): post-mortems will not say whether requests queued", err))
		return nil
	}
	return &s
}

// takeStack adds the worker's Python stack to its deep sample, when a stack taker is set.
func (w *Watcher) takeStack(id ID, d *Deep) {
	if w.opt.Stack == nil || d == nil {
		return
	}
	d.Stack = w.opt.Stack(id.PID)
}

func (w *Watcher) vanish(pid int, t *tracked, workers map[int]*tracked, now time.Time, emit func(Event)) {
	t.w.close()
	delete(workers, pid)
	emit(Event{Kind: EventVanish, ID: t.w.id, Time: now, Sample: t.last, Timeout: w.timeout()})
}

func (w *Watcher) warn(key, msg string) {
	w.mu.Lock()
	seen := w.warned[key]
	w.warned[key] = true
	w.mu.Unlock()
	if !seen && w.opt.Warn != nil {
		w.opt.Warn(msg)
	}
}
