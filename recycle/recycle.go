// Package recycle decides when gwrap recycles a Gunicorn worker to keep the container out of the
// OOM killer, and which one: the decision alone, as a state machine fed with samples and asked
// what to do, with no clock, no /proc and no signals of its own (the engine feeds it and acts).
//
// Recycling is off unless a threshold is set. When the container's working set stays at or above
// a share of its limit (--recycle-at), or one worker's private memory at or above a size
// (--recycle-worker-memory), for N consecutive samples, the worker with the most private memory
// is recycled: SIGTERM to that worker alone, so that it finishes its request and Gunicorn starts a
// new one. Private memory (USS: the pages only that worker maps) is what its exit gives back;
// resident memory counts the copy-on-write pages every worker shares with the master once per
// worker, and a recycler that judged by it killed workers in a loop (puma_worker_killer's #6,
// #106). Guards: one recycle at a time, never a worker younger than a minimum age, at most one
// per interval, never while a worker is booting; a recycled worker still alive after Gunicorn's
// graceful timeout is left to Gunicorn, and never chosen again.
package recycle

import (
	"fmt"
	"time"
)

// Reason says which threshold a worker was recycled for: the metric's label and the event's field.
type Reason string

// The reasons, one per threshold.
const (
	ReasonContainer Reason = "container_memory" // --recycle-at: the container's working set against its limit
	ReasonWorker    Reason = "worker_memory"    // --recycle-worker-memory: one worker's private memory
)

// Reasons lists every reason, for counters that start at zero.
var Reasons = []Reason{ReasonContainer, ReasonWorker}

// Policy is what the user asked for. The zero Policy is off.
type Policy struct {
	// At is the share of the container's memory limit (0.8 for --recycle-at 80) its working set
	// must reach; 0 is off.
	At float64
	// WorkerBytes is the private memory one worker must reach; 0 is off.
	WorkerBytes uint64
	// Samples is how many consecutive samples must be at or above a threshold (default 3).
	Samples int
	// MinAge is the youngest a worker may be to be recycled (gwrap's default DefaultMinAge, as
	// uWSGI's min-worker-lifetime): a worker that just booted has not leaked, whatever it holds.
	// Zero: any age.
	MinAge time.Duration
	// Interval is the least time between two recycles (gwrap's default DefaultInterval): the
	// memory the last one gave back shows in the samples before the next is judged. Zero: none.
	Interval time.Duration
	// Graceful is Gunicorn's graceful timeout: a recycled worker still alive after it is left to
	// Gunicorn (default 30 s, Gunicorn's).
	Graceful time.Duration
}

// The defaults: a zero Samples or Graceful takes its default; MinAge and Interval are gwrap's
// flags' defaults.
const (
	DefaultSamples  = 3
	DefaultMinAge   = 10 * time.Second
	DefaultInterval = 10 * time.Second
	DefaultGraceful = 30 * time.Second
)

// On reports whether any threshold is set.
func (p Policy) On() bool { return p.At > 0 || p.WorkerBytes > 0 }

func (p Policy) withDefaults() Policy {
	if p.Samples <= 0 {
		p.Samples = DefaultSamples
	}
	if p.MinAge < 0 {
		p.MinAge = 0
	}
	if p.Interval < 0 {
		p.Interval = 0
	}
	if p.Graceful <= 0 {
		p.Graceful = DefaultGraceful
	}
	return p
}

// Key identifies a worker across pid reuse: its pid and its start time (clock ticks since boot).
type Key struct {
	PID   int
	Start uint64
}

// Worker is one live worker as the caller knows it when it asks what to do.
type Worker struct {
	Key      Key
	BootedAt time.Time
	// Booting: it has not heartbeat yet (Gunicorn is starting it).
	Booting bool
	// Stopping: it was told to stop already (by a signal to Gunicorn, max-requests, a recycle).
	Stopping bool
	// Private is its private memory (USS) in bytes; PrivateKnown is false when it could not be
	// read (then Anon, its anonymous resident memory, stands in, and the decision says so).
	Private      uint64
	PrivateKnown bool
	Anon         uint64
}

// Measure names the figure a worker was chosen by.
type Measure string

// The measures.
const (
	MeasurePrivate Measure = "private" // USS: Private_Clean + Private_Dirty of smaps_rollup
	MeasureAnon    Measure = "anon"    // RssAnon, when no worker's private memory could be read
)

// Decision is what Decide says to do. At most one of Recycle and GaveUp is set.
type Decision struct {
	// Recycle is the worker to send SIGTERM to, for Reason; Figures say why.
	Recycle *Worker
	Reason  Reason
	Measure Measure // the figure the worker was chosen by
	Figures Figures
	// GaveUp is a worker recycled earlier that is still alive after the graceful timeout: gwrap
	// leaves it to Gunicorn and says so.
	GaveUp *Pending
	// Held says, when recycling was wanted but not done, why (one of the Hold values); "" when
	// nothing was wanted.
	Held Hold
}

// Figures are the readings behind a recycle.
type Figures struct {
	WorkingSet, Limit uint64  // the container's last sample (Limit 0: unknown)
	Share             float64 // WorkingSet / Limit
	Private           uint64  // the chosen worker's figure (by Measure)
	Samples           int     // how many consecutive samples were over the threshold
	Age               time.Duration
}

// Hold is why a wanted recycle was not done.
type Hold string

// The reasons a wanted recycle waits.
const (
	HoldPending  Hold = "pending"  // the previous recycled worker has not exited yet
	HoldInterval Hold = "interval" // the last recycle was less than Interval ago
	HoldBooting  Hold = "booting"  // a worker is booting
	HoldYoung    Hold = "young"    // every candidate is younger than MinAge
	HoldNone     Hold = "none"     // no worker to recycle (none known, or all stopping)
)

// Pending is a recycled worker not gone yet.
type Pending struct {
	Worker Worker
	At     time.Time
	Reason Reason
}

// Recycler is the decision's state: the streaks of samples over each threshold, the last
// recycle, the one in progress. Not safe for concurrent use (the engine's goroutine owns it).
type Recycler struct {
	p Policy

	streak     int          // consecutive container samples at or above At
	workerRuns map[Key]int  // consecutive samples of each worker at or above WorkerBytes
	last       Sample       // the container's last sample
	lastAt     time.Time    // the last recycle (zero: none yet)
	pending    *Pending     // the recycle in progress
	told       map[Key]bool // workers recycled (or given up on): never chosen again
	held       Hold         // why the last wanted recycle waited
	heldAt     time.Time    // when
}

// Sample is one sample of the container's memory; Known false when it could not be read.
type Sample struct {
	At         time.Time
	WorkingSet uint64
	Limit      uint64 // 0: no limit
	Known      bool
}

// New makes a recycler for p (defaults applied).
func New(p Policy) *Recycler {
	return &Recycler{p: p.withDefaults(), workerRuns: map[Key]int{}, told: map[Key]bool{}}
}

// Policy is the policy in force, defaults applied.
func (r *Recycler) Policy() Policy { return r.p }

// Container takes one sample of the container's memory. A sample that cannot be judged (unknown,
// or no limit) breaks the streak: N consecutive samples means N that were read.
func (r *Recycler) Container(s Sample) {
	r.last = s
	if r.p.At <= 0 {
		return
	}
	if s.Known && s.Limit > 0 && float64(s.WorkingSet) >= r.p.At*float64(s.Limit) {
		r.streak++
	} else {
		r.streak = 0
	}
}

// WorkerSample takes one sample of a worker's private memory (known false: not read this time,
// because its resident memory is below WorkerBytes and so its private memory must be too).
func (r *Recycler) WorkerSample(k Key, private uint64, known bool) {
	if r.p.WorkerBytes == 0 {
		return
	}
	if known && private >= r.p.WorkerBytes {
		r.workerRuns[k]++
	} else {
		delete(r.workerRuns, k)
	}
}

// Gone tells the recycler a worker is gone: a recycled one's recycle is over.
func (r *Recycler) Gone(k Key) {
	delete(r.workerRuns, k)
	if r.pending != nil && r.pending.Worker.Key == k {
		r.pending = nil
	}
}

// Forget drops what is kept of a worker whose record is forgotten.
func (r *Recycler) Forget(k Key) {
	delete(r.told, k)
	delete(r.workerRuns, k)
}

// Wanted reports whether a threshold has held for N samples: Decide would recycle, guards allowing.
// The caller reads the live workers' private memory only then.
func (r *Recycler) Wanted() bool {
	if r.p.At > 0 && r.streak >= r.p.Samples {
		return true
	}
	for _, n := range r.workerRuns {
		if n >= r.p.Samples {
			return true
		}
	}
	return false
}

// Decide says what to do now, given the live workers. A recycle it returns is taken as done
// (the caller sends the signal): the streaks start over and the worker is pending until Gone.
func (r *Recycler) Decide(now time.Time, workers []Worker) Decision {
	if !r.p.On() {
		return Decision{}
	}
	if p := r.pending; p != nil {
		if !r.alive(p.Worker.Key, workers) {
			r.pending = nil
		} else if now.Sub(p.At) >= r.p.Graceful {
			r.pending = nil
			return Decision{GaveUp: p}
		}
	}
	if !r.Wanted() {
		return Decision{}
	}
	hold := func(h Hold) Decision {
		r.held, r.heldAt = h, now
		return Decision{Held: h}
	}
	if r.pending != nil {
		return hold(HoldPending)
	}
	if !r.lastAt.IsZero() && now.Sub(r.lastAt) < r.p.Interval {
		return hold(HoldInterval)
	}
	candidates := 0
	for _, w := range workers {
		if w.Booting {
			return hold(HoldBooting)
		}
	}
	var eligible []Worker
	for _, w := range workers {
		if w.Stopping || r.told[w.Key] {
			continue
		}
		candidates++
		if now.Sub(w.BootedAt) < r.p.MinAge {
			continue
		}
		eligible = append(eligible, w)
	}
	if candidates == 0 {
		return hold(HoldNone)
	}
	if len(eligible) == 0 {
		return hold(HoldYoung)
	}

	var (
		pick    *Worker
		reason  Reason
		measure Measure
		samples int
	)
	if r.p.At > 0 && r.streak >= r.p.Samples {
		w, m := largest(eligible)
		pick, reason, measure, samples = &w, ReasonContainer, m, r.streak
	} else {
		// The worker over --recycle-worker-memory with the most private memory.
		var over []Worker
		for _, w := range eligible {
			if r.workerRuns[w.Key] >= r.p.Samples {
				over = append(over, w)
			}
		}
		if len(over) == 0 {
			// Only workers that may not be recycled are over (too young, stopping).
			return hold(HoldYoung)
		}
		w, m := largest(over)
		pick, reason, measure, samples = &w, ReasonWorker, m, r.workerRuns[w.Key]
	}
	fig := Figures{Private: figure(*pick, measure), Samples: samples, Age: now.Sub(pick.BootedAt)}
	if r.last.Known {
		fig.WorkingSet, fig.Limit = r.last.WorkingSet, r.last.Limit
		if r.last.Limit > 0 {
			fig.Share = float64(r.last.WorkingSet) / float64(r.last.Limit)
		}
	}
	r.pending = &Pending{Worker: *pick, At: now, Reason: reason}
	r.told[pick.Key] = true
	r.lastAt = now
	r.streak = 0
	r.workerRuns = map[Key]int{}
	r.held = ""
	return Decision{Recycle: pick, Reason: reason, Measure: measure, Figures: fig}
}

func (r *Recycler) alive(k Key, workers []Worker) bool {
	for _, w := range workers {
		if w.Key == k {
			return true
		}
	}
	return false
}

// largest picks the worker with the most private memory; when no worker's private memory is
// known, the one with the most anonymous memory.
func largest(ws []Worker) (Worker, Measure) {
	known := false
	for _, w := range ws {
		known = known || w.PrivateKnown
	}
	m := MeasureAnon
	if known {
		m = MeasurePrivate
	}
	best := -1
	for i, w := range ws {
		if m == MeasurePrivate && !w.PrivateKnown {
			continue
		}
		if best < 0 || figure(w, m) > figure(ws[best], m) ||
			figure(w, m) == figure(ws[best], m) && w.BootedAt.Before(ws[best].BootedAt) {
			best = i
		}
	}
	return ws[best], m
}

func figure(w Worker, m Measure) uint64 {
	if m == MeasurePrivate {
		return w.Private
	}
	return w.Anon
}

// Explain says, for an OOM kill at t, whether recycling was on and why it did not prevent the
// kill: one sentence for the post-mortem.
func (r *Recycler) Explain(t time.Time) string {
	if r == nil || !r.p.On() {
		return "recycling was off (gwrap recycles a worker before the limit only with --recycle-at or --recycle-worker-memory)"
	}
	on := r.describe()
	switch {
	case r.pending != nil && t.Sub(r.pending.At) < r.p.Graceful:
		return fmt.Sprintf("recycling was on (%s): worker %d was being recycled (SIGTERM %.1fs before) and had not exited yet", on, r.pending.Worker.Key.PID, t.Sub(r.pending.At).Seconds())
	case r.held != "" && t.Sub(r.heldAt) < 10*time.Second:
		return fmt.Sprintf("recycling was on (%s): a recycle was due but %s", on, r.holdWords(r.held, t))
	case r.p.At > 0 && r.streak > 0 && r.streak < r.p.Samples:
		return fmt.Sprintf("recycling was on (%s): the working set was over the threshold for %d of the %d samples needed before the kill (the memory climbed faster than the samples)", on, r.streak, r.p.Samples)
	case r.p.At > 0 && r.last.Known && r.last.Limit > 0 && float64(r.last.WorkingSet) < r.p.At*float64(r.last.Limit):
		return fmt.Sprintf("recycling was on (%s): the last sample before the kill showed the working set at %.0f %% of the limit, under the threshold (the memory climbed between two samples)", on, 100*float64(r.last.WorkingSet)/float64(r.last.Limit))
	}
	return fmt.Sprintf("recycling was on (%s) but no threshold held for %d samples before the kill", on, r.p.Samples)
}

func (r *Recycler) describe() string {
	var s string
	if r.p.At > 0 {
		s = fmt.Sprintf("--recycle-at %g", r.p.At*100)
	}
	if r.p.WorkerBytes > 0 {
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf("--recycle-worker-memory %d MiB", r.p.WorkerBytes>>20)
	}
	return s
}

func (r *Recycler) holdWords(h Hold, t time.Time) string {
	switch h {
	case HoldPending:
		return "the previous recycled worker had not exited yet (one at a time)"
	case HoldInterval:
		return fmt.Sprintf("the last recycle was %.0fs before, under the %s interval", t.Sub(r.lastAt).Seconds(), r.p.Interval)
	case HoldBooting:
		return "a worker was booting (gwrap never recycles while one is)"
	case HoldYoung:
		return fmt.Sprintf("every worker was younger than the minimum age (%s)", r.p.MinAge)
	}
	return "no worker could be recycled"
}
