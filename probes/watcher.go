package probes

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Options configure a Watcher. Zero values take the documented defaults.
type Options struct {
	Interval     time.Duration // hot sampling period (1 s)
	FastInterval time.Duration // sampling period of a late worker (100 ms)
	Timeout      time.Duration // Gunicorn's --timeout; 0 disables lateness
	WorkerClass  string        // decides the normal heartbeat period
	LateShares   []float64     // shares of the timeout that make a worker late ({0.5, 0.8})
	History      time.Duration // per-worker history span (5 min)
	Retain       time.Duration // how long a vanished worker's history is kept (2 min)
	Now          func() time.Time
	// Warn is told once per kind of degradation (an unreadable file, a missing heartbeat).
	Warn func(msg string)
}

// Watcher samples a Gunicorn master's workers. Run drives it; History, LastDeep and Workers may
// be called from other goroutines.
type Watcher struct {
	fs  FS
	opt Options

	mu     sync.Mutex
	hist   map[ID]*ring
	deep   map[ID]Deep
	live   map[ID]bool
	goneAt map[ID]time.Time
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
	if opt.History <= 0 {
		opt.History = 5 * time.Minute
	}
	if opt.Retain <= 0 {
		opt.Retain = 2 * time.Minute
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Watcher{fs: fs, opt: opt, hist: map[ID]*ring{}, deep: map[ID]Deep{}, live: map[ID]bool{},
		goneAt: map[ID]time.Time{}, warned: map[string]bool{}}
}

// ringCap bounds each worker's history: the span at the normal rate, plus room for 30 s of fast
// samples of a late spell. Memory is bounded by workers × ringCap × sizeof(Sample).
func (w *Watcher) ringCap() int {
	return max(60, int(w.opt.History/w.opt.Interval)+int(30*time.Second/w.opt.FastInterval))
}

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
	t := w.opt.Timeout
	grace := min(2*time.Second, max(500*time.Millisecond, t/10))
	return max(time.Duration(share*float64(t)), NormalBeat(w.opt.WorkerClass, t)+grace)
}

type tracked struct {
	w       *worker
	crossed int  // how many LateShares were crossed in this silence
	stuck   bool // EventStuckBoot sent
	last    Sample
}

func (t *tracked) fast() bool { return t.crossed > 0 || t.stuck }

// Run samples the master's children until ctx is done. It returns an error only when the master
// cannot be read at all; everything else degrades the samples and is said once through Warn.
func (w *Watcher) Run(ctx context.Context, master int, emit func(Event)) error {
	if _, err := os.Stat(w.fs.path(master)); err != nil {
		return fmt.Errorf("master %d: %w", master, err)
	}
	workers := map[int]*tracked{}
	defer func() {
		// Stopped (or following a new master): these workers are no longer watched.
		now := w.opt.Now()
		w.mu.Lock()
		for _, t := range workers {
			t.w.close()
			delete(w.live, t.w.id)
			w.goneAt[t.w.id] = now
		}
		w.mu.Unlock()
	}()
	// One timer: the next full sweep, or sooner while a worker is late. An idle gwrap wakes once
	// per Interval here, not ten times.
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	var lastFull time.Time
	for {
		now := w.opt.Now()
		if now.Sub(lastFull) >= w.opt.Interval-w.opt.FastInterval/2 {
			lastFull = now
			w.discover(master, workers, now, emit)
		} else {
			for pid, t := range workers {
				if t.fast() {
					w.sampleOne(pid, t, workers, now, emit)
				}
			}
		}
		w.prune(now)
		next := lastFull.Add(w.opt.Interval).Sub(w.opt.Now())
		for _, t := range workers {
			if t.fast() {
				next = min(next, w.opt.FastInterval)
				break
			}
		}
		timer.Reset(max(next, time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
	}
}

func (w *Watcher) discover(master int, workers map[int]*tracked, now time.Time, emit func(Event)) {
	kids, err := w.fs.Children(master)
	if err != nil {
		w.warn("children", fmt.Sprintf("cannot list the master's children (%v): workers are not sampled", err))
	}
	seen := map[int]bool{}
	for _, id := range kids {
		seen[id.PID] = true
		if t, ok := workers[id.PID]; ok && t.w.id == id {
			continue
		} else if ok {
			w.vanish(id.PID, t, workers, now, emit) // the pid was reused
		}
		wk, err := openWorker(w.fs, id)
		if err != nil {
			continue
		}
		workers[id.PID] = &tracked{w: wk}
		w.mu.Lock()
		w.live[id] = true
		w.hist[id] = newRing(w.ringCap())
		w.mu.Unlock()
		emit(Event{Kind: EventBoot, ID: id, Time: now, Timeout: w.opt.Timeout})
	}
	w.heartbeatsFromMaster(master, workers)
	for pid, t := range workers {
		if !seen[pid] && err == nil {
			w.vanish(pid, t, workers, now, emit)
			continue
		}
		w.sampleOne(pid, t, workers, now, emit)
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
		w.vanish(pid, t, workers, now, emit)
		return
	}
	for _, m := range s.Missing {
		w.warn(m, fmt.Sprintf("cannot read the workers' %s; that evidence is missing from reports", m))
	}
	prevAge := t.last.HeartbeatAge
	t.last = s
	w.mu.Lock()
	if r := w.hist[t.w.id]; r != nil {
		r.add(s)
	}
	w.mu.Unlock()
	w.judge(t, s, prevAge, now, emit)
}

// judge emits late, recovered and stuck-boot events.
func (w *Watcher) judge(t *tracked, s Sample, prevAge time.Duration, now time.Time, emit func(Event)) {
	if w.opt.Timeout <= 0 || s.HeartbeatAge < 0 {
		return
	}
	id := t.w.id
	if !s.Heartbeats {
		if s.HeartbeatAge > w.opt.Timeout && !t.stuck {
			t.stuck = true
			emit(Event{Kind: EventStuckBoot, ID: id, Time: now, Sample: s, Deep: w.takeDeep(id, now), Timeout: w.opt.Timeout})
		}
		return
	}
	if t.stuck {
		t.stuck = false // it finished booting
	}
	if t.crossed > 0 && s.HeartbeatAge < prevAge {
		// The age fell: the worker beat again.
		t.crossed = 0
		emit(Event{Kind: EventRecovered, ID: id, Time: now, Sample: s, Timeout: w.opt.Timeout})
		return
	}
	for t.crossed < len(w.opt.LateShares) && s.HeartbeatAge >= w.lateAfter(w.opt.LateShares[t.crossed]) {
		share := w.opt.LateShares[t.crossed]
		t.crossed++
		emit(Event{Kind: EventLate, ID: id, Time: now, Sample: s, Deep: w.takeDeep(id, now), Share: share, Timeout: w.opt.Timeout})
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
	w.mu.Lock()
	w.deep[id] = d
	w.mu.Unlock()
	return &d
}

func (w *Watcher) vanish(pid int, t *tracked, workers map[int]*tracked, now time.Time, emit func(Event)) {
	t.w.close()
	delete(workers, pid)
	id := t.w.id
	w.mu.Lock()
	delete(w.live, id)
	w.goneAt[id] = now
	var deep *Deep
	if d, ok := w.deep[id]; ok {
		deep = &d
	}
	w.mu.Unlock()
	emit(Event{Kind: EventVanish, ID: id, Time: now, Sample: t.last, Deep: deep, Timeout: w.opt.Timeout})
}

func (w *Watcher) prune(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, at := range w.goneAt {
		if now.Sub(at) > w.opt.Retain {
			delete(w.goneAt, id)
			delete(w.hist, id)
			delete(w.deep, id)
		}
	}
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

// History returns a copy of a worker's samples, oldest first (also for a vanished worker, for
// Options.Retain).
func (w *Watcher) History(id ID) []Sample {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r := w.hist[id]; r != nil {
		return r.list()
	}
	return nil
}

// LastDeep returns the last deep sample taken of a worker.
func (w *Watcher) LastDeep(id ID) (Deep, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d, ok := w.deep[id]
	return d, ok
}

// Workers lists the live workers.
func (w *Watcher) Workers() []ID {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]ID, 0, len(w.live))
	for id := range w.live {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// ring is a fixed-size history of samples.
type ring struct {
	buf  []Sample
	next int
	full bool
}

func newRing(n int) *ring { return &ring{buf: make([]Sample, n)} }

func (r *ring) add(s Sample) {
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
	if r.next == 0 {
		r.full = true
	}
}

func (r *ring) list() []Sample {
	if !r.full {
		return append([]Sample(nil), r.buf[:r.next]...)
	}
	return append(append([]Sample(nil), r.buf[r.next:]...), r.buf[:r.next]...)
}
