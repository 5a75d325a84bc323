package output

import (
	"fmt"
	"sync"
	"time"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/metrics"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/termlog"
)

// Counts is the engine's Port for what the platform sees besides the log: the Prometheus
// counters (when metrics are on) and the last verdicts of the termination message. It takes each
// kind of engine.Fact through its own typed method, so a fact or a field it does not take is a
// compile error. The metrics' updates run behind guard (cmd/gwrap's panic guard for the metrics
// part); the gauges fed by the cgroup sampler (Container) and read at scrape time are here too.
type Counts struct {
	out   *Writer
	m     *metrics.Metrics // nil: metrics off
	guard func(func())

	mu       sync.Mutex // guards recent, settings and version
	recent   *termlog.Recent
	settings gunicorn.Settings
	version  string

	termMu    sync.Mutex // serialises the termination message's writes
	termFinal bool       // the exit's message is written: nothing replaces it
	stopSaid  bool       // the stop's message is written (or being written)
}

var _ engine.Port = (*Counts)(nil)

// NewCounts counts into m (nil: metrics off) with settings s until the engine tells others;
// guard runs each metrics update (nil: run it as is). Warnings about the termination message go
// to out.
func NewCounts(out *Writer, m *metrics.Metrics, s gunicorn.Settings, guard func(func())) *Counts {
	if guard == nil {
		guard = func(f func()) { f() }
	}
	c := &Counts{out: out, m: m, guard: guard, recent: termlog.NewRecent(8, postmortem.CauseNames()), settings: s}
	c.gunicorn()
	return c
}

// Metrics is the counters (nil: off).
func (c *Counts) Metrics() *metrics.Metrics { return c.m }

// metric runs f on the metrics, when on, behind the guard.
func (c *Counts) metric(f func(m *metrics.Metrics)) {
	if c.m != nil {
		c.guard(func() { f(c.m) })
	}
}

// Verdict is Port's: the verdict is kept for the termination message and counted.
func (c *Counts) Verdict(e engine.Event, v engine.Verdict) {
	c.mu.Lock()
	c.recent.Add(termlog.Verdict{At: e.Time, PID: v.PID, Cause: v.Cause, Summary: v.Summary})
	c.mu.Unlock()
	c.metric(func(m *metrics.Metrics) {
		if v.ExecTimeout { // no worker died
			m.ExecTimeout(v.Cause)
		} else {
			m.WorkerKilled(v.Cause, roleOf(v.Role))
		}
	})
}

// OOMKill is Port's.
func (c *Counts) OOMKill(_ engine.Event, o engine.OOMKill) {
	c.metric(func(m *metrics.Metrics) { m.OOMKills(o.Count) })
}

// Late is Port's.
func (c *Counts) Late(_ engine.Event, l engine.Late) {
	c.metric(func(m *metrics.Metrics) { m.WorkerLate(l.Share, roleOf(l.Role)) })
}

// Boot is Port's: a stuck boot that finished is not a new worker.
func (c *Counts) Boot(_ engine.Event, b engine.Boot) {
	if !b.Again {
		c.metric(func(m *metrics.Metrics) { m.WorkerStarted(roleOf(b.Role)) })
	}
}

// Recycled is Port's.
func (c *Counts) Recycled(_ engine.Event, r engine.Recycled) {
	c.metric(func(m *metrics.Metrics) { m.WorkerRecycled(r.Reason) })
}

// GunicornVersion is Port's: gwrap_gunicorn_info's version.
func (c *Counts) GunicornVersion(_ engine.Event, g engine.GunicornVersion) {
	c.mu.Lock()
	c.version = g.Version
	c.mu.Unlock()
	c.gunicorn()
}

// DirtyTimeout is Port's.
func (c *Counts) DirtyTimeout(_ engine.Event, d engine.DirtyTimeout) {
	c.metric(func(m *metrics.Metrics) { m.SetDirtyTimeout(d.Timeout) })
}

// Warning is Port's: a warning is the Writer's (said once on stdout); nothing counts it.
func (c *Counts) Warning(engine.Event, engine.Warning) {}

// SetSettings takes the settings the engine holds (engine.Config.OnSettings).
func (c *Counts) SetSettings(s gunicorn.Settings) {
	c.mu.Lock()
	c.settings = s
	c.mu.Unlock()
	c.gunicorn()
}

// gunicorn sets gwrap_gunicorn_info and the timeouts from the settings and version held.
func (c *Counts) gunicorn() {
	c.mu.Lock()
	s, v := c.settings, c.version
	c.mu.Unlock()
	c.metric(func(m *metrics.Metrics) {
		m.SetGunicorn(v, string(gunicorn.ClassOf(s)), time.Duration(s.Timeout)*time.Second)
		if s.DirtyWorkers > 0 && len(s.DirtyApps) > 0 {
			m.SetDirtyTimeout(time.Duration(s.DirtyTimeout) * time.Second)
		}
	})
}

// roleOf is a worker's metrics role: its engine role, else http.
func roleOf(r string) string {
	if r == "" {
		return metrics.RoleHTTP
	}
	return r
}

// Container feeds the cgroup's gauges.
func (c *Counts) Container(st memwatch.Stats) {
	val := func(v memwatch.Value) metrics.Value { return metrics.Value{V: float64(v.V), Known: v.Known} }
	g := metrics.Container{WorkingSetBytes: val(st.WorkingSet), LimitBytes: val(st.Limit),
		ThrottledSeconds: metrics.Value{V: float64(st.ThrottledTime.V) / 1e9, Known: st.ThrottledTime.Known}}
	if st.PSI.Known {
		g.MemorySome, g.MemoryFull, g.CPUSome = metrics.Known(st.PSI.MemorySome10/100), metrics.Known(st.PSI.MemoryFull10/100), metrics.Known(st.PSI.CPUSome10/100)
		g.PressureHostWide = st.PSI.HostWide
	}
	if c.m != nil {
		c.m.SetContainer(g)
	}
}

// Stop is a stop that began (a TERM, INT or QUIT received, before it is forwarded).
type Stop struct {
	Signal   string        // as every event names it: SIGTERM
	Graceful bool          // SIGTERM: Gunicorn's graceful stop
	Busy     func() string // " with 2 of 3 workers busy", or "" when not known: read only for the first stop
	Budget   time.Duration // gwrap's stop budget
	At       time.Time
}

// StopReason is the termination message's reason for a stop that began, the first time it is
// asked for (false after, or when path is ""): if the platform kills the container before gwrap
// exits, because its grace period is shorter than the stop, this is the message the platform
// keeps, and it says what the stop was waiting for. gwrap's exit replaces it.
func (c *Counts) StopReason(path string, s Stop) (string, bool) {
	c.termMu.Lock()
	said := c.stopSaid || path == ""
	c.stopSaid = true
	c.termMu.Unlock()
	if said {
		return "", false
	}
	busy := ""
	if s.Busy != nil {
		busy = s.Busy()
	}
	c.mu.Lock()
	graceful := c.settings.GracefulTimeout
	c.mu.Unlock()
	what := fmt.Sprintf("a graceful stop%s (Gunicorn's --graceful-timeout %d s, gwrap's stop budget %s)", busy, graceful, s.Budget)
	if !s.Graceful {
		what = fmt.Sprintf("a quick stop%s (gwrap's stop budget %s)", busy, s.Budget)
	}
	return fmt.Sprintf("%s at %s began %s, and the stop did not finish: gwrap replaces this message when it exits, so the container was killed before the stop ended, most likely at the end of the platform's grace period (docker or podman stop -t, Kubernetes' terminationGracePeriodSeconds)",
		s.Signal, s.At.UTC().Format(time.RFC3339), what), true
}

// WriteTerm writes the termination message to path for reason, then the last verdicts, unless
// the exit's (final) is written already. A message that cannot be written is said.
func (c *Counts) WriteTerm(path, reason string, final bool) {
	if path == "" {
		return
	}
	c.termMu.Lock()
	defer c.termMu.Unlock()
	if c.termFinal {
		return
	}
	c.termFinal = final
	c.mu.Lock()
	msg := c.recent.Build(reason)
	c.mu.Unlock()
	if err := termlog.Write(path, msg, 500*time.Millisecond); err != nil {
		c.out.Warn("termination_log", "cannot write the termination message: "+err.Error())
	}
}

// Fan is the engine's Emitter: every event is written (Writer), and its fact, if any, told to
// the counts (Counts).
type Fan struct {
	W *Writer
	C *Counts
}

// Relay is engine.Emitter's.
func (f Fan) Relay(stream string, line []byte, parsed gunicorn.Event, at time.Time) {
	f.W.Relay(stream, line, parsed, at)
}

// Emit is engine.Emitter's.
func (f Fan) Emit(e engine.Event) {
	f.W.Emit(e)
	if e.Fact != nil {
		e.Fact.Tell(f.C, e)
	}
}
