package main

import (
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/flightrec"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// flightQueueMax bounds the flight record's jobs waiting for the disk: one a sweep (a second),
// plus the lines and signals between them, so minutes of a hung disk; then lines are dropped.
const flightQueueMax = 512

// flightQueue is the flight record as gwrap's producers see it: every call is a job for the
// record's diskQueue, so a slow report dir never holds up the relay (Gunicorn), the signal
// path (Signal) or the watcher's sweep. The recorder stamps each line with the time it was
// handed over, not written.
type flightQueue struct {
	q         *diskQueue
	rec       *flightrec.Recorder // opened by the first job; the queue's goroutine only
	stop      chan struct{}       // closed by finish: the first job no longer waits for the store
	recovered chan struct{}       // closed once the previous run was looked at (and announced)

	// The watcher's sweep being recorded: Batch, Container, Worker and Event are called from
	// the watcher's goroutine only, and a sweep's samples go to the disk as one job.
	batching bool
	batch    []func(*flightrec.Recorder)
}

// startFlight is called once, before Gunicorn starts, and returns at once; its first job, on
// the record's own goroutine, does the rest. If this host's previous run died without closing
// its flight record (the whole container was killed: a group OOM kill, a stop deadline, a node
// restart), it writes that run's post-mortem (incident.kind previous_run) with the store and
// announces it as a postmortem event; then it opens this run's record, which replaces the
// previous one. It never fails: a report dir that cannot be read or written is said once, and
// one the store's start-up check refused (a symlink, not a directory) is not touched at all.
func startFlight(cfg config, out *output, ps *parts, reports *reportQueue, settings gunicorn.Settings, cg memwatch.Stats, start time.Time) *flightQueue {
	f := &flightQueue{stop: make(chan struct{}), recovered: make(chan struct{})}
	f.q = newDiskQueue(partFlight, ps, flightQueueMax, false, func(int) {
		out.warnOnce("flight-queue", "flight_queue", "the report dir "+cfg.ReportDir+" is not keeping up with the flight record: its lines are dropped and counted in gwrap.exit")
	})
	host, err := os.Hostname()
	if err != nil {
		out.warnOnce("flight-host", "flight_host", "cannot read the host name ("+err.Error()+"); the flight record is kept as host \"unknown\"")
	}
	f.q.push(diskJob{at: start, run: func() error {
		recovered := false
		defer func() {
			if !recovered {
				close(f.recovered)
			}
		}()
		done, refused := reports.check(f.stop)
		if !done {
			return nil // gwrap is exiting before the report dir was even checked
		}
		var rep *postmortem.Report
		var readErr error
		if refused == nil {
			rep, readErr = flightrec.Recover(cfg.ReportDir, host, start, cfg.Thresholds)
		}
		if rep != nil {
			path, err := reports.Write(*rep)
			if err != nil {
				out.warnOnce("report-write", "report_write", "cannot write post-mortem reports to "+cfg.ReportDir+": "+err.Error()+" (they still appear on stdout)")
			}
			v := rep.Verdict
			e := out.event(zerolog.ErrorLevel, "postmortem").Str("cause", string(v.Cause)).Int("pid", rep.Incident.PID).
				Str("kind", string(rep.Incident.Kind)).Bool("near_memory_limit", v.NearMemoryLimit).Bool("ran_long", v.RanLong).
				Str("confidence", v.Confidence).Str("summary", v.Summary).Str("report", path).Str("id", rep.ID)
			if rs := rep.Incident.Requests; len(rs) > 0 { // as the engine's postmortem events carry them
				names := make([]string, len(rs))
				for i, r := range rs {
					names[i] = r.Running()
				}
				e = e.Strs("requests", names)
			}
			e.Msg(v.Summary)
		}
		recovered = true
		close(f.recovered)
		// One warning for a dir that can be neither read nor written: the writer's, which says more.
		f.rec = flightrec.Open(flightrec.Options{
			Dir:        cfg.ReportDir,
			Identity:   flightrec.Identity{Host: host, PID: os.Getpid(), Version: version, Start: start},
			Settings:   settings,
			StopBudget: cfg.StopBudget,
			Cgroup:     cg,
			Now:        f.q.now,
			Warn: func(msg string) {
				key := "flight" // the record cannot be kept: said once, with the read error below
				if strings.HasPrefix(msg, "flight record: ") {
					key = msg // a file refused: each once (the recorder says each once)
				}
				out.warnOnce(key, "flight_record", msg)
			},
			Refused: refused,
		})
		if readErr != nil {
			out.warnOnce("flight", "flight_record", "cannot read the previous run's flight record: "+readErr.Error())
		}
		return nil
	}})
	return f
}

// startWait is how long Gunicorn's start waits for the previous run's post-mortem: with a report
// dir that answers, it comes first, as people read a log; with one that stalls, it comes later.
const startWait = 500 * time.Millisecond

// awaitRecovery waits, at most startWait, until the previous run was looked at and announced.
func (f *flightQueue) awaitRecovery() {
	timer := time.NewTimer(startWait)
	defer timer.Stop()
	select {
	case <-f.recovered:
	case <-timer.C:
	}
}

// line queues one line of the record (from any goroutine).
func (f *flightQueue) line(do func(*flightrec.Recorder)) {
	f.q.push(diskJob{items: 1, run: func() error {
		if f.rec != nil {
			do(f.rec)
		}
		return nil
	}})
}

// sample queues one of the watcher's lines, in its sweep's batch while one is recorded.
func (f *flightQueue) sample(do func(*flightrec.Recorder)) {
	if f.batching {
		f.batch = append(f.batch, do)
		return
	}
	f.line(do)
}

// Batch runs fn (the watcher's sweep) and records the samples it made in one write.
func (f *flightQueue) Batch(fn func()) {
	f.batching = true
	defer func() { // also when fn panics: the watcher's guard recovers it
		b := f.batch
		f.batching, f.batch = false, nil
		if len(b) == 0 {
			return
		}
		f.q.push(diskJob{items: len(b), run: func() error {
			if f.rec != nil {
				f.rec.Batch(func() {
					for _, do := range b {
						do(f.rec)
					}
				})
			}
			return nil
		}})
	}()
	fn()
}

// Container records a cgroup sample (the watcher's goroutine).
func (f *flightQueue) Container(st memwatch.Stats) {
	f.sample(func(r *flightrec.Recorder) { r.Container(st) })
}

// Worker records a worker's hot sample and the requests it was serving (the watcher's goroutine).
func (f *flightQueue) Worker(id probes.ID, s probes.Sample, serving []postmortem.Request) {
	f.sample(func(r *flightrec.Recorder) { r.Worker(id, s, serving...) })
}

// Event records one of the watcher's events (the watcher's goroutine).
func (f *flightQueue) Event(ev probes.Event) { f.sample(func(r *flightrec.Recorder) { r.Event(ev) }) }

// Gunicorn records one of Gunicorn's lines, if the record keeps it (the engine's goroutine).
func (f *flightQueue) Gunicorn(ev gunicorn.Event) {
	if flightrec.Records(ev) {
		f.line(func(r *flightrec.Recorder) { r.Gunicorn(ev) })
	}
}

// Signal records a signal gwrap received (the supervisor's goroutine).
func (f *flightQueue) Signal(sig os.Signal, forwarded bool) {
	f.line(func(r *flightrec.Recorder) { r.Signal(sig, forwarded) })
}

// OOM records an OOM-kill notification (the OOM watcher's goroutine).
func (f *flightQueue) OOM(ev memwatch.OOMEvent) { f.line(func(r *flightrec.Recorder) { r.OOM(ev) }) }

// finish closes the record at exit: gwrap exits on its own, so the next start has nothing to
// explain. Lines still waiting are dropped (a clean exit needs none of them) and only the
// closing line is written, until deadline. It returns how many lines were not written.
func (f *flightQueue) finish(deadline time.Time) int {
	f.q.push(diskJob{final: true, run: func() error {
		if f.rec != nil {
			return f.rec.Close()
		}
		return nil
	}})
	close(f.stop)
	return f.q.finish(deadline, true)
}

// recorded is the engine's emitter with the flight record beside it: each of Gunicorn's lines
// reaches the record with the engine's parse of it (parsed once), and flightrec keeps those it
// records (flightrec.Records, the one filter).
type recorded struct {
	engine.Emitter
	flight *flightQueue
	ps     *parts
}

// Relay is engine.Emitter's (on the engine's goroutine).
func (r recorded) Relay(stream string, line []byte, parsed gunicorn.Event, at time.Time) {
	r.Emitter.Relay(stream, line, parsed, at)
	r.ps.run(partFlight, func() { r.flight.Gunicorn(parsed) })
}

// flightProbe records the watcher's samples, with the requests each worker is serving (serving:
// nil when requests are not recorded), and its events.
func flightProbe(rec *flightQueue, ev probes.Event, serving func(probes.ID) []postmortem.Request) {
	switch ev.Kind {
	case probes.EventSample:
		var reqs []postmortem.Request
		if serving != nil {
			reqs = serving(ev.ID)
		}
		rec.Worker(ev.ID, ev.Sample, reqs)
	case probes.EventStack:
		// A followed dirty worker's stack, every sweep: gwrap's own following, not the worker's story.
	default:
		rec.Event(ev)
	}
}
