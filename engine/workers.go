package engine

import (
	"time"

	"github.com/gwrap/gwrap/probes"
)

// worker is everything gwrap knows of one worker process: one record per (pid, start time),
// forgotten at one expiry after it is gone and its incident, if any, is decided.
type worker struct {
	id       probes.ID // StartTime is 0 while a dirty worker is known only from its spawn line
	watched  bool      // the watcher saw it as a child of the master
	master   int       // the master whose child the watcher saw it as (0: not seen yet)
	bootLine bool      // its own "Booting worker" line reached gwrap: its INFO lines do
	bootedAt time.Time
	samples  ring
	deep     *probes.Deep
	stack    *probes.PyStack     // the Python stack taken while it was late or stuck
	load     []probes.Saturation // the server's load at each late event of this silence
	lateSeen float64             // the largest share of the timeout it was reported late at, this silence

	stuckAt time.Time // when it was seen stuck booting (zero: not stuck)
	stopAt  time.Time // when it was told to stop (a signal to the master, max-requests…)
	// stopEnd is when that stop is over if the worker still lives: it was not stopped after all
	// (zero: the stop lasts, as for a worker that said it is exiting).
	stopEnd  time.Time
	exiting  bool      // it logged "Worker exiting"
	goneAt   time.Time // when it vanished
	inc      *incident
	reported bool // its incident was reported: never two for one worker
	// timeoutLine is a WORKER TIMEOUT line about it that waits for a sample taken after it
	// (gwrap's sampling had fallen behind).
	timeoutLine *heldLine

	// aliveAt is the latest sample that showed it alive (not a zombie, no SIGKILL pending);
	// endAt the first sign of its end that gwrap believes (its vanish, the master's death line
	// once /proc agreed, /proc showing it dying or gone). Between them lies its death: what an
	// OOM kill is matched against.
	aliveAt, endAt time.Time

	dirty  *dirtyInfo   // a dirty worker's or the dirty arbiter's record (dirty.go); nil for an HTTP worker
	waited *dirtyWaited // an HTTP worker late while it waited on the dirty arbiter: what the dirty workers did
}

func (w *worker) gone() bool { return !w.goneAt.IsZero() }

// stoppingAt reports whether the worker was told to stop and that stop still held at t.
func (w *worker) stoppingAt(t time.Time) bool {
	return !w.stopAt.IsZero() && !t.Before(w.stopAt) && (w.stopEnd.IsZero() || t.Before(w.stopEnd))
}

// stop marks the worker as told to stop at, until end (zero: for good). An earlier mark that is
// over is replaced; one that holds is kept, lengthened to end.
func (w *worker) stop(at, end time.Time) {
	if !w.stopAt.IsZero() && w.stoppingAt(at) {
		if end.IsZero() || (!w.stopEnd.IsZero() && end.After(w.stopEnd)) {
			w.stopEnd = end
		}
		return
	}
	w.stopAt, w.stopEnd = at, end
}

// keepGone is how long a gone worker's record stays: long enough for the lines about it that come
// late, short enough that max-requests recycling thousands of workers a day does not grow gwrap.
const keepGone = 2 * time.Minute

// workers is the table of records: by identity, and by pid for the lines (which name only pids).
type workers struct {
	byID  map[probes.ID]*worker
	byPID map[int]*worker // the newest record of each pid
	cap   int             // samples kept per worker
	// sweeping: the watcher has seen workers, so one it never saw within keepGone of its boot
	// line was gone before a sweep (a boot failure, a worker recycled within a second).
	sweeping bool
}

func newWorkers(cap int) workers {
	return workers{byID: map[probes.ID]*worker{}, byPID: map[int]*worker{}, cap: cap}
}

// watched returns the record of a worker the watcher reports, making it on first sight (isNew:
// the watcher had not seen it). A record made from the worker's own boot line is the same worker.
func (t *workers) watched(id probes.ID, now time.Time) (w *worker, isNew bool) {
	if w := t.byID[id]; w != nil {
		isNew = !w.watched
		w.watched = true
		t.sweeping = true
		return w, isNew
	}
	if w := t.byPID[id.PID]; w != nil && w.id.StartTime == 0 && !w.gone() {
		// Known from a line only, before /proc was asked (a dirty worker's spawn line).
		delete(t.byID, w.id)
		w.id, w.watched = id, true
		t.byID[id] = w
		return w, true
	}
	t.sweeping = true
	w = &worker{id: id, watched: true, bootedAt: now, samples: newRing(t.cap)}
	t.byID[id] = w
	t.byPID[id.PID] = w
	return w, true
}

// logged returns the record for a worker that announced itself in the log ("Booting worker with
// pid: N" from pid N, once /proc confirmed it: id has its start time; a dirty worker's spawn line:
// the start time is 0 until the watcher sees it), making one when the watcher has not seen it yet.
// Either way its INFO lines reach gwrap (bootLine).
func (t *workers) logged(id probes.ID, now time.Time) *worker {
	if w := t.byPID[id.PID]; w != nil && !w.gone() {
		w.bootLine = true
		return w
	}
	w := &worker{id: id, bootedAt: now, samples: newRing(t.cap), bootLine: true}
	t.byID[id] = w
	t.byPID[id.PID] = w
	return w
}

// known returns the newest record of a pid: a worker gwrap knows (seen by the watcher, or
// announced by its own boot line), alive or gone within keepGone.
func (t *workers) known(pid int) *worker {
	if pid <= 0 {
		return nil
	}
	return t.byPID[pid]
}

// watchedPID reports whether pid is a worker the watcher found and that is not gone.
func (t *workers) watchedPID(pid int) bool {
	w := t.byPID[pid]
	return w != nil && w.watched && !w.gone()
}

// live lists the workers not known to be gone.
func (t *workers) live() []*worker {
	var out []*worker
	for _, w := range t.byID {
		if !w.gone() {
			out = append(out, w)
		}
	}
	return out
}

// expire forgets the workers gone for longer than keepGone whose incident is decided, and those
// known only from their boot line that the watcher never saw or that said they were exiting.
func (t *workers) expire(now time.Time, forgot func(pid int)) {
	for id, w := range t.byID {
		unseen := !w.watched && now.Sub(w.bootedAt) > keepGone && (t.sweeping || w.exiting)
		if w.inc == nil && (unseen || w.gone() && now.Sub(w.goneAt) > keepGone) {
			delete(t.byID, id)
			if t.byPID[id.PID] == w {
				delete(t.byPID, id.PID)
			}
			if forgot != nil {
				forgot(id.PID)
			}
		}
	}
}

// ring is a fixed-size history of samples.
type ring struct {
	buf  []probes.Sample
	next int
	full bool
}

func newRing(n int) ring { return ring{buf: make([]probes.Sample, 0, min(n, 64)), next: 0} }

func (r *ring) add(s probes.Sample, capacity int) {
	if !r.full && len(r.buf) < capacity {
		r.buf = append(r.buf, s)
		if len(r.buf) == capacity {
			r.full = true
		}
		return
	}
	r.full = true
	r.buf[r.next] = s
	r.next = (r.next + 1) % len(r.buf)
}

// list returns the samples oldest first (a copy).
func (r *ring) list() []probes.Sample {
	if !r.full {
		return append([]probes.Sample(nil), r.buf...)
	}
	return append(append([]probes.Sample(nil), r.buf[r.next:]...), r.buf[:r.next]...)
}

// last returns the newest sample.
func (r *ring) last() (probes.Sample, bool) {
	if len(r.buf) == 0 {
		return probes.Sample{}, false
	}
	if !r.full {
		return r.buf[len(r.buf)-1], true
	}
	return r.buf[(r.next+len(r.buf)-1)%len(r.buf)], true
}
