package main

import (
	"bytes"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/gwrap/gwrap/flightrec"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// startFlight is called once, before Gunicorn starts. If this host's previous run died without
// closing its flight record (the whole container was killed: a group OOM kill, a stop deadline,
// a node restart), it writes that run's post-mortem (incident.kind previous_run) with the store
// and announces it as a postmortem event; then it opens this run's record, which replaces the
// previous one. It never fails: a report dir that cannot be read or written is said once.
// The caller feeds the recorder (Container, Worker, Event, Gunicorn, Signal, OOM from the event
// loop's one goroutine) and calls Close when gwrap exits on its own.
//
// refused is the store's start-up check when it refused the report dir (a symlink, not a
// directory): then nothing is read or written there.
func startFlight(cfg config, out *output, store *postmortem.Store, refused error, settings gunicorn.Settings, cg memwatch.Stats, start time.Time) *flightrec.Recorder {
	host, err := os.Hostname()
	if err != nil {
		out.warnOnce("flight-host", "config.warning", "cannot read the host name ("+err.Error()+"); the flight record is kept as host \"unknown\"")
	}
	var rep *postmortem.Report
	var readErr error
	if refused == nil {
		rep, readErr = flightrec.Recover(cfg.ReportDir, host, start, cfg.Thresholds)
	}
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
		Warn: func(msg string) {
			key := "flight" // the record cannot be kept: said once, with the read error below
			if strings.HasPrefix(msg, "flight record: ") {
				key = msg // a file refused: each once (the recorder says each once)
			}
			out.warnOnce(key, "config.warning", msg)
		},
		Refused: refused,
	})
	if readErr != nil {
		out.warnOnce("flight", "config.warning", "cannot read the previous run's flight record: "+readErr.Error())
	}
	return rec
}

// flightLine records the lines about a worker's end (every one names a worker: the others, access
// lines first, are not parsed twice).
func flightLine(rec *flightrec.Recorder, l []byte) {
	if bytes.Contains(l, []byte("orker")) || bytes.Contains(l, []byte("ORKER")) {
		rec.Gunicorn(gunicorn.ParseLine(l))
	}
}

// flightProbe records the watcher's samples and events.
func flightProbe(rec *flightrec.Recorder, ev probes.Event) {
	if ev.Kind == probes.EventSample {
		rec.Worker(ev.ID, ev.Sample)
		return
	}
	rec.Event(ev)
}
