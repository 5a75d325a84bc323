package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/metrics"
	"github.com/gwrap/gwrap/output"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// fleet wires what the platform sees besides the log: the engine's events go out through
// output.Fan (stdout, then the typed facts to output.Counts: /metrics and the termination
// message); here are only what reads /proc at scrape or stop time (busy workers, listen queues,
// the requests) and the panic guards around them.
type fleet struct {
	out    *output.Writer
	counts *output.Counts
	fan    output.Fan
	ps     *parts
	m      *metrics.Metrics // nil: metrics off
	proc   probes.FS
	master atomic.Int64 // the Gunicorn master's pid, for the scrape-time saturation read
	reqs   *requests    // the workers' request files (nil: not recorded); set before serving
}

func newFleet(out *output.Writer, ps *parts, proc probes.FS, s gunicorn.Settings, withMetrics bool) *fleet {
	f := &fleet{out: out, ps: ps, proc: proc}
	if withMetrics {
		f.m = metrics.New(metrics.Options{Version: version, Causes: postmortem.CauseNames(), LateShares: []float64{0.5, 0.8}, Live: f.live, Status: f.status})
	}
	f.counts = output.NewCounts(out, f.m, s, func(fn func()) { ps.run(partMetrics, fn) })
	f.fan = output.Fan{W: out, C: f.counts}
	return f
}

// Relay is engine.Emitter's.
func (f *fleet) Relay(stream string, line []byte, parsed gunicorn.Event, at time.Time) {
	f.fan.Relay(stream, line, parsed, at)
}

// Emit is engine.Emitter's (on the engine's goroutine: a panic here is the engine's).
func (f *fleet) Emit(e engine.Event) {
	fault(partEngine)
	f.fan.Emit(e)
}

// setSettings takes the settings the engine holds (engine.Config.OnSettings).
func (f *fleet) setSettings(s gunicorn.Settings) { f.counts.SetSettings(s) }

// container feeds the cgroup's gauges.
func (f *fleet) container(st memwatch.Stats) { f.counts.Container(st) }

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
		f.out.Warn("metrics", "cannot serve /metrics: "+err.Error())
		<-ctx.Done()
		return
	}
	if err := srv.Serve(ctx); err != nil && ctx.Err() == nil {
		f.out.Warn("metrics", "/metrics stopped: "+err.Error())
	}
	<-ctx.Done()
}

// terminate writes the termination message: why gwrap exits, then the last verdicts. It never
// blocks the exit for long nor changes its code, and it is tried even after the stop's message
// panicked.
func (f *fleet) terminate(path, reason string) {
	f.ps.try(partTermlog, func() { f.counts.WriteTerm(path, reason, true) })
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
	busy := func() string {
		if master := int(f.master.Load()); master != 0 {
			if s, err := f.proc.Saturation(master, at); err == nil && s.BusyKnown {
				return fmt.Sprintf(" with %d of %d workers busy", s.Busy, s.Workers)
			}
		}
		return ""
	}
	reason, ok := f.counts.StopReason(path, output.Stop{Signal: signalName(sig), Graceful: sig == syscall.SIGTERM, Busy: busy, Budget: budget, At: at})
	if ok {
		go f.ps.run(partTermlog, func() { f.counts.WriteTerm(path, reason, false) })
	}
}
