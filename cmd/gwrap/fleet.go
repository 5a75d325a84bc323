package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/metrics"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
	"github.com/gwrap/gwrap/termlog"
)

// fleet is what the platform sees besides the log: Prometheus metrics (when --metrics-addr is
// set) and the termination message. It sits between the engine and the output: every event goes
// to stdout, and the events that count (worker.boot, worker.late, oom.kill, postmortem) also feed
// the counters and the last verdicts. Emit runs on the engine's goroutine; the gauges are fed by
// the cgroup sampler and read at scrape time.
type fleet struct {
	out    *output
	ps     *parts
	m      *metrics.Metrics // nil: metrics off
	proc   probes.FS
	master atomic.Int64 // the Gunicorn master's pid, for the scrape-time saturation read
	reqs   *requests    // the workers' request files (nil: not recorded); set before serving

	mu       sync.Mutex // guards recent and settings
	recent   *termlog.Recent
	settings gunicorn.Settings
	version  string

	termMu    sync.Mutex // serialises the termination message's writes
	termFinal bool       // the exit's message is written: nothing replaces it
	stopSaid  bool       // the stop's message is written (or being written)
}

func newFleet(out *output, ps *parts, proc probes.FS, s gunicorn.Settings, withMetrics bool) *fleet {
	f := &fleet{out: out, ps: ps, proc: proc, recent: termlog.NewRecent(8, postmortem.CauseNames()), settings: s}
	if withMetrics {
		f.m = metrics.New(metrics.Options{Version: version, Causes: postmortem.CauseNames(), LateShares: []float64{0.5, 0.8}, Live: f.live, Status: f.status})
		f.gunicorn()
	}
	return f
}

// Relay is engine.Emitter's.
func (f *fleet) Relay(stream string, line []byte, parsed gunicorn.Event, at time.Time) {
	f.out.Relay(stream, line, parsed, at)
}

// Emit writes the event and counts what it says (on the engine's goroutine: a panic here is
// the engine's).
func (f *fleet) Emit(e engine.Event) {
	fault(partEngine)
	f.out.Emit(e)
	switch e.Name {
	case "postmortem":
		cause, _ := e.Get("cause")
		pid, _ := e.Get("pid")
		summary, _ := e.Get("summary")
		c, _ := cause.(string)
		p, _ := pid.(int)
		s, _ := summary.(string)
		f.mu.Lock()
		f.recent.Add(termlog.Verdict{At: e.Time, PID: p, Cause: c, Summary: s})
		f.mu.Unlock()
		if f.m != nil {
			if kind, _ := e.Get("kind"); kind == "execution_timeout" { // no worker died
				f.m.ExecTimeout(c)
			} else {
				f.m.WorkerKilled(c, metricRole(e))
			}
		}
	case "gunicorn.start":
		if v, ok := e.Get("gunicorn_version"); ok {
			f.mu.Lock()
			f.version, _ = v.(string)
			f.mu.Unlock()
			f.gunicorn()
		}
	}
	if f.m == nil {
		return
	}
	f.ps.run(partMetrics, func() { f.count(e) })
}

// count feeds the counters (the engine's goroutine, behind the metrics part's guard).
func (f *fleet) count(e engine.Event) {
	switch e.Name {
	case "worker.boot":
		if _, again := e.Get("boot_seconds"); !again { // a stuck boot that finished is not a new worker
			f.m.WorkerStarted(metricRole(e))
		}
	case "worker.late":
		if share, ok := e.Get("share"); ok {
			s, _ := share.(float64)
			f.m.WorkerLate(s, metricRole(e))
		}
	case "dirty_arbiter.start":
		if t, ok := e.Get("dirty_timeout_s"); ok {
			n, _ := t.(int)
			f.m.SetDirtyTimeout(time.Duration(n) * time.Second)
		}
	case "worker.recycled":
		if r, ok := e.Get("reason"); ok {
			reason, _ := r.(string)
			f.m.WorkerRecycled(reason)
		}
	case "oom.kill":
		if n, ok := e.Get("count"); ok {
			c, _ := n.(uint64)
			f.m.OOMKills(c)
		}
	}
}

// setSettings takes the settings the engine holds (engine.Config.OnSettings).
func (f *fleet) setSettings(s gunicorn.Settings) {
	f.mu.Lock()
	f.settings = s
	f.mu.Unlock()
	f.gunicorn()
}

func (f *fleet) gunicorn() {
	if f.m == nil {
		return
	}
	f.mu.Lock()
	s, v := f.settings, f.version
	f.mu.Unlock()
	f.m.SetGunicorn(v, string(gunicorn.ClassOf(s)), time.Duration(s.Timeout)*time.Second)
	if s.DirtyWorkers > 0 && len(s.DirtyApps) > 0 {
		f.m.SetDirtyTimeout(time.Duration(s.DirtyTimeout) * time.Second)
	}
}

// metricRole is the role label of an event about a worker: its role field, else http.
func metricRole(e engine.Event) string {
	if r, ok := e.Get("role"); ok {
		if s, _ := r.(string); s != "" {
			return s
		}
	}
	return metrics.RoleHTTP
}

// container feeds the cgroup's gauges.
func (f *fleet) container(st memwatch.Stats) {
	if f.m == nil {
		return
	}
	val := func(v memwatch.Value) metrics.Value { return metrics.Value{V: float64(v.V), Known: v.Known} }
	c := metrics.Container{WorkingSetBytes: val(st.WorkingSet), LimitBytes: val(st.Limit),
		ThrottledSeconds: metrics.Value{V: float64(st.ThrottledTime.V) / 1e9, Known: st.ThrottledTime.Known}}
	if st.PSI.Known {
		c.MemorySome, c.MemoryFull, c.CPUSome = metrics.Known(st.PSI.MemorySome10/100), metrics.Known(st.PSI.MemoryFull10/100), metrics.Known(st.PSI.CPUSome10/100)
		c.PressureHostWide = st.PSI.HostWide
	}
	f.m.SetContainer(c)
}

// errMetricsOff is the live readings' error after the metrics part panicked.
var errMetricsOff = errors.New("off after an error in gwrap")

// live reads busy workers and the listen queues at scrape time (metrics.Options.Live), on the
// scraper's goroutine: behind the metrics part's guard, since a panic there would not be
// recovered by the HTTP server (the registry collects on goroutines of its own).
func (f *fleet) live() (s metrics.Saturation, err error) {
	err = errMetricsOff
	f.ps.run(partMetrics, func() {
		fault(partMetrics)
		s, err = f.readLive()
	})
	return s, err
}

// status is metrics.Options.Status: the workers and their requests now, behind the metrics
// part's guard.
func (f *fleet) status() (v any, err error) {
	err = errMetricsOff
	f.ps.run(partMetrics, func() {
		fault(partMetrics)
		v, err = f.reqs.status()
	})
	return v, err
}

func (f *fleet) readLive() (metrics.Saturation, error) {
	// The requests in flight are read from the workers' request files, master or not.
	var reqs metrics.Saturation
	n, oldest, haveReqs := f.reqs.inFlight()
	if haveReqs {
		reqs.RequestsInFlight, reqs.RequestOldest = metrics.Known(float64(n)), metrics.Known(oldest.Seconds())
	}
	master := int(f.master.Load())
	if master == 0 {
		if haveReqs {
			return reqs, nil
		}
		return metrics.Saturation{}, fmt.Errorf("the Gunicorn master is not found yet")
	}
	s, err := f.proc.Saturation(master, time.Now())
	if err != nil {
		if haveReqs {
			return reqs, nil
		}
		return metrics.Saturation{}, err
	}
	out := metrics.Saturation{Workers: metrics.Known(float64(s.Workers))}
	if s.HeartbeatAgeMax >= 0 {
		out.HeartbeatAgeMax = metrics.Known(s.HeartbeatAgeMax.Seconds())
	}
	if s.BusyKnown {
		out.Busy = metrics.Known(float64(s.Busy))
	}
	if d := s.Dirty; d != nil {
		out.DirtyWorkers = metrics.Known(float64(d.Workers))
		if d.HeartbeatAgeMax >= 0 {
			out.DirtyHeartbeatAgeMax = metrics.Known(d.HeartbeatAgeMax.Seconds())
		}
	}
	out.RequestsInFlight, out.RequestOldest = reqs.RequestsInFlight, reqs.RequestOldest
	for _, l := range s.Listeners {
		q := metrics.Queue{Listener: l.Addr, Length: metrics.Known(float64(l.Queue))}
		if l.MaxKnown {
			q.Max = metrics.Known(float64(l.Max))
		}
		out.Queues = append(out.Queues, q)
	}
	return out, nil
}

// serve runs the /metrics server until ctx is done; a server that cannot listen is said once and
// gwrap goes on without it.
func (f *fleet) serve(ctx context.Context, addr string) {
	if f.m == nil {
		return
	}
	srv, err := metrics.Listen(addr, f.m)
	if err != nil {
		f.out.event(zerolog.WarnLevel, "config.warning").Str("code", "metrics").Msg("cannot serve /metrics: " + err.Error())
		<-ctx.Done()
		return
	}
	if err := srv.Serve(ctx); err != nil && ctx.Err() == nil {
		f.out.event(zerolog.WarnLevel, "config.warning").Str("code", "metrics").Msg("/metrics stopped: " + err.Error())
	}
	<-ctx.Done()
}

// terminate writes the termination message: why gwrap exits, then the last verdicts. It never
// blocks the exit for long nor changes its code, and it is tried even after the stop's message
// panicked.
func (f *fleet) terminate(path, reason string) {
	f.ps.try(partTermlog, func() { f.writeTerm(path, reason, true) })
}

// stopping writes the termination message when a stop begins (a TERM, INT or QUIT received,
// before it is forwarded): if the platform kills the container before gwrap exits, because its
// grace period is shorter than the stop, this is the message the platform keeps, and it says what
// the stop was waiting for. gwrap's exit replaces it (terminate). Workers busy in a request are
// counted now, while Gunicorn still holds its listeners (a few /proc reads); the write runs on
// its own goroutine, so the forward is not delayed by a slow file. It runs on the supervisor's
// goroutine: behind the termination part's guard.
func (f *fleet) stopping(path string, sig os.Signal, budget time.Duration, at time.Time) {
	f.ps.run(partTermlog, func() {
		fault(partTermlog)
		f.stopMessage(path, sig, budget, at)
	})
}

func (f *fleet) stopMessage(path string, sig os.Signal, budget time.Duration, at time.Time) {
	f.termMu.Lock()
	said := f.stopSaid || path == ""
	f.stopSaid = true
	f.termMu.Unlock()
	if said {
		return
	}
	busy := ""
	if master := int(f.master.Load()); master != 0 {
		if s, err := f.proc.Saturation(master, at); err == nil && s.BusyKnown {
			busy = fmt.Sprintf(" with %d of %d workers busy", s.Busy, s.Workers)
		}
	}
	f.mu.Lock()
	graceful := f.settings.GracefulTimeout
	f.mu.Unlock()
	name := signalName(sig)
	what := fmt.Sprintf("a graceful stop%s (Gunicorn's --graceful-timeout %d s, gwrap's stop budget %s)", busy, graceful, budget)
	if sig != syscall.SIGTERM {
		what = fmt.Sprintf("a quick stop%s (gwrap's stop budget %s)", busy, budget)
	}
	reason := fmt.Sprintf("%s at %s began %s, and the stop did not finish: gwrap replaces this message when it exits, so the container was killed before the stop ended, most likely at the end of the platform's grace period (docker or podman stop -t, Kubernetes' terminationGracePeriodSeconds)",
		name, at.UTC().Format(time.RFC3339), what)
	go f.ps.run(partTermlog, func() { f.writeTerm(path, reason, false) })
}

// writeTerm writes the termination message for reason, unless the exit's is written already.
func (f *fleet) writeTerm(path, reason string, final bool) {
	if path == "" {
		return
	}
	f.termMu.Lock()
	defer f.termMu.Unlock()
	if f.termFinal {
		return
	}
	f.termFinal = final
	f.mu.Lock()
	msg := f.recent.Build(reason)
	f.mu.Unlock()
	if err := termlog.Write(path, msg, 500*time.Millisecond); err != nil {
		f.out.event(zerolog.WarnLevel, "config.warning").Str("code", "termination_log").Msg("cannot write the termination message: " + err.Error())
	}
}
