// Package forecast follows the container's working set over time: how fast it grows and since
// when (an episode of growth), when the limit will be reached at that pace, and whether memory is
// climbing fast enough that gwrap should sample ten times a second. Pure: it is fed samples with
// their times and never reads a clock.
//
// An episode starts where the working set last sat at its floor and lasts until it falls back
// to within a quarter of its climb (a worker recycled or killed gave most of it back), or until it
// stays flat for a whole window (the floor moves up). The growth rate is the least-squares slope of
// the working set over the last Window of the episode; the forecast warns once per episode when,
// at that rate, the limit is reached within Horizon, and only for a climb that is real (it grew by
// MinGrowth of the limit over at least MinSpan) and still going on (its most recent third still
// grows): a request that takes memory and gives it back, or a step that then stays flat, is not a
// leak.
package forecast

import (
	"math"
	"time"
)

// Options tune a Tracker. Zero values take the defaults.
type Options struct {
	Horizon   time.Duration // warn when the limit is reached within this (10 min)
	Window    time.Duration // the trailing window the growth rate is fitted over (2 min)
	MinSpan   time.Duration // the least time a climb must have lasted to be forecast (15 s)
	MinGrowth float64       // the least growth, as a share of the limit, to be forecast (0.05)
	// Noise is the share of the limit the working set may move without leaving its floor (0.01,
	// at least 4 MiB).
	Noise float64
	// FastAt is the share of the limit above which memory is watched closely (0.8); FastRate the
	// growth per second, as a share of the limit, that is a fast climb (0.02); FastHold how long
	// close watching lasts after its reason passed (2 s).
	FastAt   float64
	FastRate float64
	FastHold time.Duration
}

func (o Options) withDefaults() Options {
	if o.Horizon <= 0 {
		o.Horizon = 10 * time.Minute
	}
	if o.Window <= 0 {
		o.Window = 2 * time.Minute
	}
	if o.MinSpan <= 0 {
		o.MinSpan = 15 * time.Second
	}
	if o.MinGrowth <= 0 {
		o.MinGrowth = 0.05
	}
	if o.Noise <= 0 {
		o.Noise = 0.01
	}
	if o.FastAt <= 0 {
		o.FastAt = 0.8
	}
	if o.FastRate <= 0 {
		o.FastRate = 0.02
	}
	if o.FastHold <= 0 {
		o.FastHold = 2 * time.Second
	}
	return o
}

// Growth is the working set's growth in the current episode.
type Growth struct {
	// Rate is the growth in bytes per second over the last Window of the episode (fitted);
	// Known is false when the episode is too short to fit (under 5 s or 3 points).
	Rate  float64
	Known bool
	// Since is when the episode began: the last sample at its floor, From (to within the noise,
	// Options.Noise of the limit).
	Since time.Time
	From  uint64
	// Now is the last working set, At when it was sampled, Limit the limit (0: none).
	Now, Limit uint64
	At         time.Time
	// ToLimit is how long until the limit at Rate (0 when there is no limit or no growth).
	ToLimit time.Duration
}

// point is one sample kept: at most one per second.
type point struct {
	at time.Time
	ws float64
}

// Tracker follows one container's working set.
type Tracker struct {
	opt Options

	pts    []point // the last Window of samples, at most one a second, oldest first
	limit  uint64
	last   point   // the last sample, whatever its rate
	recent []point // the samples of the last 1.5 s, whatever their rate (the fast climb)

	floor, peak float64   // the episode's floor and highest working set
	peakAt      time.Time // when the working set was at peak
	riseAt      time.Time // the last time the working set sat at the floor
	started     bool
	warned      bool      // the episode's forecast was given
	fastUntil   time.Time // close watching lasts until then

	// ended is the growth of the episode the last give-back ended, at its last sample (an OOM
	// kill's report is made after the kill gave the memory back).
	ended Growth
}

// New makes a tracker.
func New(opt Options) *Tracker { return &Tracker{opt: opt.withDefaults()} }

// Woke tells the tracker that a notification (a threshold crossed, memory pressure, memory.events)
// woke gwrap at at: memory is watched closely for FastHold.
func (t *Tracker) Woke(at time.Time) {
	if u := at.Add(t.opt.FastHold); u.After(t.fastUntil) {
		t.fastUntil = u
	}
}

// Add takes one sample of the working set (ws) and the limit (0: none), in time order.
func (t *Tracker) Add(at time.Time, ws, limit uint64) {
	t.limit = limit
	p := point{at: at, ws: float64(ws)}
	if t.started && p.ws <= t.floor+(t.peak-t.floor)/4 && t.peak-t.floor > t.noise() {
		// The episode's growth up to its peak: a kill's memory may come back over a few samples.
		t.ended = t.growth(t.peakAt)
	}
	keep := 0
	for keep < len(t.recent) && at.Sub(t.recent[keep].at) > fastSpan {
		keep++
	}
	t.recent = append(t.recent[:0], t.recent[keep:]...)
	if t.fastNow(p) {
		t.Woke(at)
	}
	t.recent = append(t.recent, p)
	t.last = p

	if n := len(t.pts); n == 0 || at.Sub(t.pts[n-1].at) >= time.Second-50*time.Millisecond {
		t.pts = append(t.pts, p)
	} else if p.ws > t.pts[n-1].ws {
		t.pts[n-1].ws = p.ws // keep the second's highest
	}
	cut := 0
	for cut < len(t.pts) && at.Sub(t.pts[cut].at) > t.opt.Window {
		cut++
	}
	if cut > 0 {
		t.pts = append(t.pts[:0], t.pts[cut:]...)
	}

	noise := t.noise()
	switch {
	case !t.started:
		t.started, t.floor, t.peak, t.riseAt = true, p.ws, p.ws, at
	case p.ws <= t.floor+(t.peak-t.floor)/4 && t.peak-t.floor > noise:
		// Most of the climb was given back: the episode is over, a new one starts here.
		t.floor, t.peak, t.riseAt, t.warned = p.ws, p.ws, at, false
	case p.ws < t.floor:
		t.floor, t.riseAt = p.ws, at
	}
	if p.ws <= t.floor+noise {
		t.riseAt = at
	}
	if p.ws >= t.peak {
		t.peak, t.peakAt = p.ws, at
	}
	// Flat for a whole window: the floor moves up to where the working set now sits.
	if t.span() >= t.opt.Window-2*time.Second {
		lo, hi := t.pts[0].ws, t.pts[0].ws
		for _, q := range t.pts {
			lo, hi = math.Min(lo, q.ws), math.Max(hi, q.ws)
		}
		if hi-lo <= noise && p.ws > t.floor+noise {
			t.floor, t.peak, t.riseAt, t.warned = p.ws, p.ws, at, false
		}
	}
}

func (t *Tracker) span() time.Duration {
	if len(t.pts) < 2 {
		return 0
	}
	return t.pts[len(t.pts)-1].at.Sub(t.pts[0].at)
}

func (t *Tracker) noise() float64 {
	n := 4.0 * (1 << 20)
	if t.limit > 0 {
		n = math.Max(n, t.opt.Noise*float64(t.limit))
	}
	return n
}

// fastSpan is how far back a fast climb is measured: a second at 1 Hz, with slack for late samples.
const fastSpan = 1500 * time.Millisecond

// fastNow reports whether this sample shows memory high, or grown by FastRate of the limit since
// a sample of the last fastSpan.
func (t *Tracker) fastNow(p point) bool {
	if t.limit == 0 {
		return false
	}
	l := float64(t.limit)
	if p.ws >= t.opt.FastAt*l {
		return true
	}
	for _, q := range t.recent {
		if p.ws-q.ws >= t.opt.FastRate*l {
			return true
		}
	}
	return false
}

// Fast reports whether memory should be watched closely at at: the working set is at or above
// FastAt of the limit, or grew by FastRate of the limit within about a second, or a notification
// woke gwrap, within the last FastHold.
func (t *Tracker) Fast(at time.Time) bool { return at.Before(t.fastUntil) }

// Mean is the growth in bytes per second from the episode's floor to its last sample: the
// figure for a climb too short to fit a rate to (Known false), zero when it did not grow.
func (g Growth) Mean() float64 {
	d := g.At.Sub(g.Since).Seconds()
	if d <= 0 || g.Now <= g.From {
		return 0
	}
	return float64(g.Now-g.From) / d
}

// Growth is the current episode's growth at the last sample.
func (t *Tracker) Growth() Growth { return t.growth(t.last.at) }

// GrowthAt is the growth of the episode that was going on at at, fitted over its samples up to
// at: the current episode when it began at or before at, else the one the last give-back ended
// (a kill or a recycle gave the memory back since), when it began at or before at and its last
// sample came at most endedSlack before at. ok is false when no episode of growth covers at (the
// working set sat at its floor).
func (t *Tracker) GrowthAt(at time.Time) (g Growth, ok bool) {
	switch e := t.ended; {
	case t.started && !t.riseAt.After(at):
		return t.growth(at), true
	case !e.At.IsZero() && !e.Since.After(at) && !e.At.Before(at.Add(-endedSlack)):
		return e, true
	}
	return Growth{}, false
}

// endedSlack is how long before a death an ended episode's last sample may be and still be the
// growth that led to it: the kill is seen at the next sweep, a second or two after it.
const endedSlack = 5 * time.Second

// growth is the current episode's growth fitted over its points up to until.
func (t *Tracker) growth(until time.Time) Growth {
	last := t.last
	pts := t.episode(until)
	if last.at.After(until) && len(pts) > 0 {
		last = pts[len(pts)-1]
	}
	g := Growth{Since: t.riseAt, From: uint64(t.floor), Now: uint64(last.ws), At: last.at, Limit: t.limit}
	if len(pts) < 3 || pts[len(pts)-1].at.Sub(pts[0].at) < 5*time.Second {
		return g
	}
	g.Rate, g.Known = slope(pts), true
	if g.Rate > 0 && t.limit > 0 {
		if left := float64(t.limit) - last.ws; left > 0 {
			g.ToLimit = time.Duration(left / g.Rate * float64(time.Second))
		}
	}
	return g
}

// episode is the window's points since the episode began, up to until.
func (t *Tracker) episode(until time.Time) []point {
	end := len(t.pts)
	for end > 0 && t.pts[end-1].at.After(until) {
		end--
	}
	for i, p := range t.pts[:end] {
		if !p.at.Before(t.riseAt) {
			// the floor's own point starts the fit
			if i > 0 {
				i--
			}
			return t.pts[i:end]
		}
	}
	return nil
}

// Warn reports, once per episode, that at the current growth the limit is reached within
// Horizon, with the growth that says so.
func (t *Tracker) Warn() (Growth, bool) {
	if t.warned || t.limit == 0 {
		return Growth{}, false
	}
	g := t.Growth()
	if !g.Known || g.Rate <= 0 || g.ToLimit <= 0 || g.ToLimit > t.opt.Horizon {
		return g, false
	}
	pts := t.episode(t.last.at)
	if pts[len(pts)-1].at.Sub(pts[0].at) < t.opt.MinSpan {
		return g, false
	}
	if t.last.ws-t.floor < t.opt.MinGrowth*float64(t.limit) {
		return g, false
	}
	// Still climbing: the most recent third of the fit grows at a quarter of the rate at least.
	recent := pts[len(pts)*2/3:]
	if len(recent) < 3 || slope(recent) < g.Rate/4 {
		return g, false
	}
	t.warned = true
	return g, true
}

// slope is the least-squares slope of ws over time, in bytes per second.
func slope(pts []point) float64 {
	t0 := pts[0].at
	var n, sx, sy, sxx, sxy float64
	for _, p := range pts {
		x := p.at.Sub(t0).Seconds()
		n++
		sx += x
		sy += p.ws
		sxx += x * x
		sxy += x * p.ws
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
