package probes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Watcher. Zero values take the documented defaults.
type Options struct {
	Interval     time.Duration // hot sampling period (1 s)
	FastInterval time.Duration // sampling period of a late worker (100 ms)
	Limits       Limits        // what the workers are judged against, until SetLimits
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
	// Fast, when set, is asked after each sweep whether memory is climbing (the container near
	// its limit, or growing fast): while it says so, every sweep is a full one (the cgroup sample
	// through Sweep, and every worker) and they come every FastInterval. Called on the watcher's
	// goroutine; it must be cheap.
	Fast func(now time.Time) bool
	// Private, when set, is asked with each worker's hot sample whether its private memory is
	// wanted (a recycling threshold might be crossed: its resident memory is above it, and its
	// private memory cannot be more than that). It is then read from smaps_rollup, at most once
	// per Interval a worker (the kernel walks its page tables: ~0.6 ms at 60 MiB), into
	// Sample.Private. Called on the watcher's goroutine.
	Private func(s Sample) bool
}

// Watcher samples a Gunicorn master's workers and hands every sample and every change it sees to
// emit; it keeps only what sampling needs (open files, the previous CPU times, how late each
// worker is). The history of each worker is the receiver's (the engine's worker record).
type Watcher struct {
	fs  FS
	opt Options

	limits atomic.Pointer[Limits] // Options.Limits, or SetLimits since

	master int   // the master Run found (Run's goroutine only)
	hints  hints // pids Gunicorn's start lines named

	// upgrades are the new masters USR2 upgrades started (children of a master, found by
	// Gunicorn's GUNICORN_PID in their environment) and their workers (Run's goroutine only).
	upgrades map[int]*newMaster

	dirty *dirtyWatch // the dirty arbiter and its workers (Run's goroutine only)

	mu     sync.Mutex
	warned map[string]bool
	follow map[int]bool // dirty workers whose stack is taken every sweep (Follow)

	wake chan struct{} // Wake: a full sweep now
}

// Wake asks for a full sweep now (the cgroup sample and every worker): a notification said memory
// moved. Sweeps stay at least minGap apart. Safe from any goroutine; it never blocks.
func (w *Watcher) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
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
	w := &Watcher{fs: fs, opt: opt, warned: map[string]bool{}, follow: map[int]bool{}, dirty: newDirtyWatch(fs),
		upgrades: map[int]*newMaster{}, wake: make(chan struct{}, 1)}
	w.SetLimits(opt.Limits)
	return w
}

// Limits are what the watcher judges the workers against: Gunicorn's settings, which the engine
// holds and says again whenever they change (the master's own settings read late, the class its
// log names, its dirty arbiter seen).
type Limits struct {
	Timeout time.Duration // --timeout: 0 disables the HTTP workers' lateness
	// Beat is how long an idle HTTP worker stays silent at Timeout: its class's heartbeat
	// (gunicorn.Class.Heartbeat). No worker is called late before Beat and a grace; 0 is
	// Timeout/2, the longest any class stays silent, so that an idle worker is never called late.
	Beat time.Duration
	// Dirty says the master runs a dirty arbiter (Gunicorn 25+: its settings, read late, or its
	// "Spawned dirty arbiter" line say so). From the next sweep its children are told apart by
	// their heartbeat files (dirty.go), and a child taken for a worker until then that is not one
	// stops being sampled as one (the arbiter's event says what it is); until then every child
	// of the master is a worker. Once on, it stays on.
	Dirty        bool
	DirtyTimeout time.Duration // --dirty-timeout, which dirty workers are judged against (0 disables their lateness)
}

// SetLimits changes what the workers are judged against. Safe from any goroutine.
func (w *Watcher) SetLimits(l Limits) {
	if old := w.limits.Load(); old != nil && old.Dirty {
		l.Dirty = true
	}
	w.limits.Store(&l)
}

func (w *Watcher) timeout() time.Duration { return w.limits.Load().Timeout }

// beat is how long an idle HTTP worker stays silent (Limits.Beat).
func (w *Watcher) beat() time.Duration {
	l := w.limits.Load()
	if l.Beat <= 0 {
		return l.Timeout / 2
	}
	return l.Beat
}

// lateAfter is the silence after which a worker is late at this share of the timeout: never
// before its normal beat plus a grace (a tenth of the timeout, between 0.5 s and 2 s), so a
// healthy idle worker is never called late.
func (w *Watcher) lateAfter(tr *tracked, share float64) time.Duration {
	t := w.limitOf(tr)
	grace := min(2*time.Second, max(500*time.Millisecond, t/10))
	return max(time.Duration(share*float64(t)), w.normalBeatOf(tr)+grace)
}

type tracked struct {
	w       *worker
	role    Role // an HTTP worker, or a dirty worker (judged against --dirty-timeout)
	young   int  // sweeps since it was taken on: a USR2 child forked but not exec'd yet looks like a worker
	crossed int  // how many LateShares were crossed in this silence
	stuck   bool // EventStuckBoot sent
	last    Sample
	private time.Time // when its private memory was last read (Options.Private)
}

func (t *tracked) fast() bool { return t.crossed > 0 || t.stuck }

// newMaster is a master a USR2 upgrade started, with its workers.
type newMaster struct {
	id      ID
	parent  int  // the master it is a child of
	gone    bool // it ended: its workers are sampled until they are gone
	workers map[int]*tracked
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
// it is gone, it is looked for again, and its workers sampled until they are gone too. The new
// master a USR2 upgrade starts (its child) is watched as a master of its own, its children as
// workers. Run returns an error only when root cannot be read at all; everything else degrades
// the samples and is said once through Warn.
func (w *Watcher) Run(ctx context.Context, root int, emit func(Event)) error {
	if _, err := os.Stat(w.fs.path(root)); err != nil {
		return fmt.Errorf("command %d: %w", root, err)
	}
	workers := map[int]*tracked{}
	w.dirty = newDirtyWatch(w.fs) // a new master (USR2) starts over
	w.upgrades = map[int]*newMaster{}
	defer func() {
		for _, t := range workers {
			t.w.close()
		}
		for _, nm := range w.upgrades {
			for _, t := range nm.workers {
				t.w.close()
			}
		}
		w.dirty.close()
	}()
	master := 0
	findEvery := w.opt.FastInterval
	// One timer: the next full sweep, or sooner while a worker is late. An idle gwrap wakes once
	// per Interval here, not ten times.
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	var lastFull, lastSweep time.Time
	full := false // the next sweep is a full one: memory climbs, or a notification woke the watcher
	for {
		now := w.opt.Now()
		sample := func() {
			if master != 0 && !full && now.Sub(lastFull) < w.opt.Interval-w.opt.FastInterval/2 {
				for pid, t := range workers {
					if t.fast() {
						w.sampleOne(pid, t, workers, now, emit)
					}
				}
				for pid, t := range w.dirty.workers {
					if t.fast() {
						w.sampleOne(pid, t, w.dirty.workers, now, emit)
					}
				}
				for _, nm := range w.upgrades {
					for pid, t := range nm.workers {
						if t.fast() {
							w.sampleOne(pid, t, nm.workers, now, emit)
						}
					}
				}
				return
			}
			lastFull = now
			if master == 0 {
				if m, ok := w.fs.FindMaster(root, w.hints.has); ok {
					master, w.master = m.PID, m.PID
					delete(w.upgrades, m.PID) // a new master whose old one is gone: the master now
					id, _ := w.fs.ID(m.PID)
					id.PID = m.PID
					emit(Event{Kind: EventMaster, ID: id, Time: now, Evidence: m.By})
				} else {
					for pid, t := range workers { // a gone master's workers, until they are gone
						w.sampleOne(pid, t, workers, now, emit)
					}
				}
			}
			if master != 0 {
				if gone := w.discover(master, workers, now, emit); gone {
					emit(Event{Kind: EventMasterGone, ID: ID{PID: master}, Time: now})
					master, w.master = 0, 0
				}
				w.followStacks(now, emit)
			}
			w.discoverUpgrades(now, emit)
		}
		if w.opt.Sweep != nil && (full || now.Sub(lastSweep) >= w.opt.Interval-w.opt.FastInterval/2) {
			lastSweep = now
			w.opt.Sweep(now, sample)
		} else {
			sample()
		}
		full = w.opt.Fast != nil && w.opt.Fast(w.opt.Now())
		next := lastFull.Add(w.opt.Interval).Sub(w.opt.Now())
		if full {
			next = min(next, lastFull.Add(w.opt.FastInterval).Sub(w.opt.Now()))
		}
		for _, t := range workers {
			if t.fast() {
				next = min(next, w.opt.FastInterval)
				break
			}
		}
		for _, t := range w.dirty.workers {
			if t.fast() {
				next = min(next, w.opt.FastInterval)
				break
			}
		}
		for _, nm := range w.upgrades {
			for _, t := range nm.workers {
				if t.fast() {
					next = min(next, w.opt.FastInterval)
				}
			}
		}
		if master == 0 {
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
		case <-w.wake:
			// A notification: a full sweep now, or once minGap has passed since the last one.
			full = true
			if gap := minGap(w.opt.FastInterval) - w.opt.Now().Sub(lastFull); gap > 0 {
				timer.Reset(gap)
				select {
				case <-ctx.Done():
					return nil
				case <-timer.C:
				}
			}
		}
	}
}

// minGap is the least time between two full sweeps a notification asks for: half the fast
// interval (a climb of a gigabyte a second wakes the watcher every few milliseconds).
func minGap(fast time.Duration) time.Duration { return fast / 2 }

// discover lists the master's children, opens the new ones and samples every worker; it reports
// whether the master is gone. A worker
// already tracked is not identified again: its stat file, kept open, refers to its process, so
// its sample fails once that process is gone, even if the pid was reused (the new process is
// then found at the next sweep). A new child is an HTTP worker unless its heartbeat files show
// otherwise (dirty.go): the dirty arbiter is not, and its children, the dirty workers, are
// sampled as well.
func (w *Watcher) discover(master int, workers map[int]*tracked, now time.Time, emit func(Event)) (masterGone bool) {
	kids, err := w.fs.ChildPIDs(master)
	if err != nil {
		if gone(err) {
			return true // looked for again; its workers are sampled until they are gone
		}
		w.warn("children", fmt.Sprintf("cannot list the master's children (%v): workers are not sampled", err))
	}
	seen := make(map[int]bool, len(kids))
	var fresh []*worker
	for _, pid := range kids {
		seen[pid] = true
		if _, ok := workers[pid]; ok {
			continue
		}
		if _, ok := w.dirty.others[pid]; ok {
			continue
		}
		if _, ok := w.upgrades[pid]; ok {
			continue
		}
		if w.takeUpgrade(master, pid, now, emit) {
			continue
		}
		wk, err := openWorker(w.fs, pid)
		if err != nil {
			continue
		}
		fresh = append(fresh, wk)
	}
	// The master's heartbeat files, read once a sweep and only when needed.
	var mfiles map[int]fileID
	mread := false
	masterFiles := func() map[int]fileID {
		if !mread {
			mread = true
			if f, complete, err := w.fs.heartbeatFiles(master); err == nil && complete {
				mfiles = f
			}
		}
		return mfiles
	}
	if w.limits.Load().Dirty && !w.dirty.on {
		w.dirty.on = true
		w.reclassify(workers, masterFiles)
	}
	if len(fresh) > 0 && !w.dirty.on {
		for _, wk := range fresh {
			workers[wk.id.PID] = &tracked{w: wk}
			emit(Event{Kind: EventBoot, ID: wk.id, Time: now, Timeout: w.timeout(), Master: master})
		}
		fresh = nil
	}
	if len(fresh) > 0 {
		sortByStart(fresh)
		claimed := map[fileID]bool{}
		for _, t := range workers {
			if t.w.own != (fileID{}) {
				claimed[t.w.own] = true
			}
		}
		for _, wk := range fresh {
			if w.fs.classifyChild(wk, masterFiles(), claimed) == childOther {
				w.dirty.others[wk.id.PID] = wk.id
				wk.close()
				continue
			}
			if wk.own != (fileID{}) {
				claimed[wk.own] = true
			}
			workers[wk.id.PID] = &tracked{w: wk}
			emit(Event{Kind: EventBoot, ID: wk.id, Time: now, Timeout: w.timeout(), Master: master})
		}
	}
	if w.dirty.on {
		w.sweepOthers(master, seen, err == nil, masterFiles, now, emit)
		w.discoverDirty(masterFiles, now, emit)
	}
	w.heartbeatsFromMaster(master, workers)
	for pid, t := range workers {
		if !seen[pid] && err == nil {
			w.vanish(pid, t, workers, emit)
			continue
		}
		if t.role == RoleHTTP && t.young < upgradeChecks {
			// A USR2 upgrade forks before it execs the new master: a child caught between looks
			// like a worker for a moment.
			t.young++
			if w.fs.newMasterOf(master, pid) {
				w.vanish(pid, t, workers, emit)
				w.takeUpgrade(master, pid, now, emit)
				continue
			}
		}
		w.sampleOne(pid, t, workers, now, emit)
	}
	return false
}

// upgradeChecks is how many sweeps a new worker is looked at for being a USR2 upgrade's new master.
const upgradeChecks = 3

// takeUpgrade takes pid, a child of master, on as a new master when it is one (FS.newMasterOf).
func (w *Watcher) takeUpgrade(master, pid int, now time.Time, emit func(Event)) bool {
	if !w.fs.newMasterOf(master, pid) {
		return false
	}
	id, err := w.fs.ID(pid)
	if err != nil {
		return false
	}
	w.upgrades[pid] = &newMaster{id: id, parent: master, workers: map[int]*tracked{}}
	emit(Event{Kind: EventMaster, ID: id, Time: now, Parent: master, Evidence: ByHeartbeats})
	return true
}

// discoverUpgrades sweeps the new masters of USR2 upgrades as discover sweeps the master: their
// children are their workers (and a further upgrade's new master), sampled until they are gone.
// A new master that is gone is forgotten once its workers are.
func (w *Watcher) discoverUpgrades(now time.Time, emit func(Event)) {
	pids := make([]int, 0, len(w.upgrades))
	for pid := range w.upgrades {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	for _, mp := range pids {
		nm := w.upgrades[mp]
		if cur, err := w.fs.ID(mp); err != nil || cur != nm.id {
			if !nm.gone {
				nm.gone = true
				emit(Event{Kind: EventMasterGone, ID: nm.id, Time: now})
			}
			for pid, t := range nm.workers {
				w.sampleOne(pid, t, nm.workers, now, emit)
			}
			if len(nm.workers) == 0 {
				delete(w.upgrades, mp)
			}
			continue
		}
		kids := w.fs.childrenOf(mp)
		seen := make(map[int]bool, len(kids))
		for _, pid := range kids {
			seen[pid] = true
			if _, ok := nm.workers[pid]; ok {
				continue
			}
			if _, ok := w.upgrades[pid]; ok || w.takeUpgrade(mp, pid, now, emit) {
				continue
			}
			wk, err := openWorker(w.fs, pid)
			if err != nil {
				continue
			}
			nm.workers[pid] = &tracked{w: wk}
			emit(Event{Kind: EventBoot, ID: wk.id, Time: now, Timeout: w.timeout(), Master: mp})
		}
		w.heartbeatsFromMaster(mp, nm.workers)
		for pid, t := range nm.workers {
			if !seen[pid] {
				w.vanish(pid, t, nm.workers, emit)
				continue
			}
			w.sampleOne(pid, t, nm.workers, now, emit)
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
		w.vanish(pid, t, workers, emit)
		return
	}
	for _, m := range s.Missing {
		w.warn(m, fmt.Sprintf("cannot read the workers' %s; that evidence is missing from reports", m))
	}
	if w.opt.Private != nil && now.Sub(t.private) >= w.opt.Interval-w.opt.FastInterval/2 && w.opt.Private(s) {
		t.private = now
		if uss, err := w.fs.Private(t.w.id); err == nil {
			s.Private, s.PrivateKnown = uss, true
		} else if !gone(err) && !errors.Is(err, errGone) {
			w.warn("smaps_rollup", fmt.Sprintf("cannot read the workers' smaps_rollup (%v): their private memory is unknown, and recycling judges them by their anonymous memory", err))
		}
	}
	prevAge := t.last.HeartbeatAge
	t.last = s
	emit(Event{Kind: EventSample, ID: t.w.id, Time: now, Sample: s, Timeout: w.limitOf(t), Role: t.role})
	w.judge(t, s, prevAge, now, emit)
}

// judge emits late, recovered and stuck-boot events.
func (w *Watcher) judge(t *tracked, s Sample, prevAge time.Duration, now time.Time, emit func(Event)) {
	limit := w.limitOf(t)
	if limit <= 0 || s.HeartbeatAge < 0 {
		return
	}
	id := t.w.id
	if !s.Heartbeats {
		if s.HeartbeatAge > limit && !t.stuck {
			t.stuck = true
			d := w.takeDeep(id, now)
			w.takeStack(id, d)
			emit(Event{Kind: EventStuckBoot, ID: id, Time: now, Sample: s, Deep: d, Timeout: limit,
				Saturation: w.saturationOf(t, now), Role: t.role})
		}
		return
	}
	if t.stuck {
		// It finished booting after all (Gunicorn ≥ 22 never times out a booting worker).
		t.stuck = false
		emit(Event{Kind: EventRecovered, ID: id, Time: now, Sample: s, Timeout: limit, Role: t.role})
		return
	}
	if t.crossed > 0 && s.HeartbeatAge < prevAge {
		// The age fell: the worker beat again.
		t.crossed = 0
		emit(Event{Kind: EventRecovered, ID: id, Time: now, Sample: s, Timeout: limit, Role: t.role})
		return
	}
	for t.crossed < len(w.opt.LateShares) && s.HeartbeatAge >= w.lateAfter(t, w.opt.LateShares[t.crossed]) {
		share := w.opt.LateShares[t.crossed]
		t.crossed++
		d := w.takeDeep(id, now)
		var calls []DirtyCall
		if t.crossed == 1 {
			w.takeStack(id, d)
			if t.role == RoleHTTP {
				calls = w.dirtyCalls(d) // it waits on the dirty arbiter: what the dirty workers do
			}
		}
		emit(Event{Kind: EventLate, ID: id, Time: now, Sample: s, Deep: d, Share: share, Timeout: limit,
			Saturation: w.saturationOf(t, now), Role: t.role, Dirty: calls})
	}
}

// saturationOf is the server's load for an HTTP worker's late event (none for a dirty worker:
// it serves no HTTP).
func (w *Watcher) saturationOf(t *tracked, now time.Time) *Saturation {
	if t.role != RoleHTTP {
		return nil
	}
	return w.saturation(now)
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

// vanish says a worker is gone, stamped when the sweep saw it gone, not when the sweep began:
// the stamp is the latest its death can have been (what an OOM kill is matched against), and a
// sweep can take over a second when the kernel is reclaiming memory (seen in the v2 guest: a
// worker the OOM killer killed 1 s into a sweep was stamped before the counter's last unmoved
// read and ruled out as the victim).
func (w *Watcher) vanish(pid int, t *tracked, workers map[int]*tracked, emit func(Event)) {
	t.w.close()
	delete(workers, pid)
	emit(Event{Kind: EventVanish, ID: t.w.id, Time: w.opt.Now(), Sample: t.last, Timeout: w.limitOf(t), Role: t.role})
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
