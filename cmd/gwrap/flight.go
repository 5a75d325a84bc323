package main

import (
	"bytes"
	"context"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/gwrap/gwrap/flightrec"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
	"github.com/gwrap/gwrap/supervisor"
)

// startFlight is called once, before Gunicorn starts. If this host's previous run died without
// closing its flight record (the whole container was killed: a group OOM kill, a stop deadline,
// a node restart), it writes that run's post-mortem (incident.kind previous_run) with the store
// and announces it as a postmortem event; then it opens this run's record, which replaces the
// previous one. It never fails: a report dir that cannot be read or written is said once.
// The caller feeds the recorder (Container, Worker, Event, Gunicorn, Signal, OOM from the event
// loop's one goroutine) and calls Close when gwrap exits on its own.
func startFlight(cfg config, out *output, store *postmortem.Store, settings gunicorn.Settings, cg memwatch.Stats, start time.Time) *flightrec.Recorder {
	host, err := os.Hostname()
	if err != nil {
		out.warnOnce("flight-host", "config.warning", "cannot read the host name ("+err.Error()+"); the flight record is kept as host \"unknown\"")
	}
	rep, readErr := flightrec.Recover(cfg.ReportDir, host, start, cfg.Thresholds)
	if rep != nil {
		path, err := store.Write(*rep)
		if err != nil {
			out.warnOnce("report-write", "config.warning", "cannot write post-mortem reports to "+cfg.ReportDir+": "+err.Error()+" (they still appear on stdout)")
		}
		v := rep.Verdict
		out.event(zerolog.ErrorLevel, "postmortem").Str("cause", string(v.Cause)).Int("pid", rep.Incident.PID).
			Str("kind", string(rep.Incident.Kind)).Bool("near_memory_limit", v.NearMemoryLimit).Bool("ran_long", v.RanLong).
			Str("confidence", v.Confidence).Str("summary", v.Summary).Str("report", path).Str("id", rep.ID).Msg(v.Summary)
	}
	// One warning for a dir that can be neither read nor written: the writer's, which says more.
	rec := flightrec.Open(flightrec.Options{
		Dir:        cfg.ReportDir,
		Identity:   flightrec.Identity{Host: host, PID: os.Getpid(), Version: version, Start: start},
		Settings:   settings,
		StopBudget: cfg.StopBudget,
		Cgroup:     cg,
		Warn:       func(msg string) { out.warnOnce("flight", "config.warning", msg) },
	})
	if readErr != nil {
		out.warnOnce("flight", "config.warning", "cannot read the previous run's flight record: "+readErr.Error())
	}
	return rec
}

// flightTap feeds the record from today's callbacks until the engine calls the recorder itself:
// it wraps the supervisor's and the watchers' callbacks, and samples on its own ticker.
type flightTap struct {
	rec     *flightrec.Recorder
	cg      *memwatch.Cgroup
	watcher *probes.Watcher
	seen    map[probes.ID]time.Time
}

func (f *flightTap) signal(next func(os.Signal, bool)) func(os.Signal, bool) {
	return func(sig os.Signal, fwd bool) { f.rec.Signal(sig, fwd); next(sig, fwd) }
}

func (f *flightTap) line(next func(supervisor.Stream, []byte)) func(supervisor.Stream, []byte) {
	return func(s supervisor.Stream, l []byte) {
		// Every line about a worker's end names a worker: skip the parse for the others (access lines).
		if bytes.Contains(l, []byte("orker")) || bytes.Contains(l, []byte("ORKER")) {
			f.rec.Gunicorn(gunicorn.ParseLine(l))
		}
		next(s, l)
	}
}

func (f *flightTap) probe(next func(probes.Event)) func(probes.Event) {
	return func(ev probes.Event) { f.rec.Event(ev); next(ev) }
}

func (f *flightTap) oom(next func(memwatch.OOMEvent)) func(memwatch.OOMEvent) {
	return func(ev memwatch.OOMEvent) { f.rec.OOM(ev); next(ev) }
}

// run records the cgroup and each worker's newest sample every interval until ctx is done.
func (f *flightTap) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if f.cg != nil {
			f.rec.Container(f.cg.Sample())
		}
		seen := map[probes.ID]time.Time{}
		for _, id := range f.watcher.Workers() {
			seen[id] = f.seen[id]
			h := f.watcher.History(id)
			if n := len(h); n > 0 && h[n-1].Time.After(seen[id]) {
				seen[id] = h[n-1].Time
				f.rec.Worker(id, h[n-1])
			}
		}
		f.seen = seen
	}
}
