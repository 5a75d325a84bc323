package main

import (
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/gwrap/gwrap/flightrec"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/output"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// flightQueueMax bounds the flight record's jobs waiting for the disk: one a sweep (a second),
// plus the lines and signals between them, so minutes of a hung disk; then lines are dropped.
const flightQueueMax = 512

// flightQueue is the flight record as the engine's journal: every call is a job for the
// record's diskQueue, so a slow report dir never holds up the engine. The recorder stamps each
// line with the time it was handed over, not written.
type flightQueue struct {
	q         *diskQueue
	rec       *flightrec.Recorder // opened by the first job; the queue's goroutine only
	stop      chan struct{}       // closed by finish: the first job no longer waits for the store
	recovered chan struct{}       // closed once the previous run was looked at (and announced)
	ps        *parts
	// serving reads the requests a worker is serving now (nil: requests are not recorded); set
	// before the engine starts, called on its goroutine as it hands over a sweep.
	serving func(probes.ID) []postmortem.Request
}

// startFlight is called once, before Gunicorn starts, and returns at once; its first job, on
// the record's own goroutine, does the rest. If this host's previous run died without closing
// its flight record (the whole container was killed: a group OOM kill, a stop deadline, a node
// restart), it writes that run's post-mortem (incident.kind previous_run) with the store and
// announces it as a postmortem event; then it opens this run's record, which replaces the
// previous one. It never fails: a report dir that cannot be read or written is said once, and
// one the store's start-up check refused (a symlink, not a directory) is not touched at all.
func startFlight(cfg config, out *output.Writer, ps *parts, reports *reportQueue, settings gunicorn.Settings, cg memwatch.Stats, start time.Time) *flightQueue {
	f := &flightQueue{stop: make(chan struct{}), recovered: make(chan struct{}), ps: ps}
	f.q = newDiskQueue(partFlight, ps, flightQueueMax, false, func(int) {
		out.WarnOnce("flight-queue", "flight_queue", "the report dir "+cfg.ReportDir+" is not keeping up with the flight record: its lines are dropped and counted in gwrap.exit")
	})
	host, err := os.Hostname()
	if err != nil {
		out.WarnOnce("flight-host", "flight_host", "cannot read the host name ("+err.Error()+"); the flight record is kept as host \"unknown\"")
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
				out.WarnOnce("report-write", "report_write", "cannot write post-mortem reports to "+cfg.ReportDir+": "+err.Error()+" (they still appear on stdout)")
			}
			out.PreviousRun(*rep, path)
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
				out.WarnOnce(key, "flight_record", msg)
			},
			Refused: refused,
		})
		if readErr != nil {
			out.WarnOnce("flight", "flight_record", "cannot read the previous run's flight record: "+readErr.Error())
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

// The flight record is the engine's journal (engine.Journal): the engine hands it each input it
// takes, on its goroutine, and flightrec keeps what it records (Records, RecordsProbe: its one
// filter). Each call queues a job for the disk, behind the flight part's guard.

// Gunicorn is engine.Journal's: one of Gunicorn's lines, parsed once, by the engine.
func (f *flightQueue) Gunicorn(ev gunicorn.Event) {
	f.ps.run(partFlight, func() {
		if flightrec.Records(ev) {
			f.line(func(r *flightrec.Recorder) { r.Gunicorn(ev) })
		}
	})
}

// Sweep is engine.Journal's: a sweep's cgroup sample and workers' events, in one write.
func (f *flightQueue) Sweep(st *memwatch.Stats, evs []probes.Event) {
	f.ps.run(partFlight, func() {
		kept := make([]probes.Event, 0, len(evs))
		var serving map[probes.ID][]postmortem.Request // each sampled worker's requests, read now
		for _, ev := range evs {
			if !flightrec.RecordsProbe(ev) {
				continue
			}
			kept = append(kept, ev)
			if ev.Kind == probes.EventSample && f.serving != nil {
				if rs := f.serving(ev.ID); len(rs) > 0 {
					if serving == nil {
						serving = make(map[probes.ID][]postmortem.Request)
					}
					serving[ev.ID] = rs
				}
			}
		}
		n := len(kept)
		if st != nil {
			n++
		}
		if n == 0 {
			return
		}
		f.q.push(diskJob{items: n, run: func() error {
			if f.rec != nil {
				f.rec.Batch(func() {
					if st != nil {
						f.rec.Container(*st)
					}
					for _, ev := range kept {
						if ev.Kind == probes.EventSample {
							f.rec.Worker(ev.ID, ev.Sample, serving[ev.ID]...)
							continue
						}
						f.rec.Probe(ev)
					}
				})
			}
			return nil
		}})
	})
}

// Probe is engine.Journal's: one of the watcher's events outside a sweep.
func (f *flightQueue) Probe(ev probes.Event) {
	f.ps.run(partFlight, func() {
		if flightrec.RecordsProbe(ev) {
			f.line(func(r *flightrec.Recorder) { r.Probe(ev) })
		}
	})
}

// Signal is engine.Journal's: a signal gwrap received.
func (f *flightQueue) Signal(sig syscall.Signal, forwarded bool) {
	f.ps.run(partFlight, func() { f.line(func(r *flightrec.Recorder) { r.Signal(sig, forwarded) }) })
}

// OOM is engine.Journal's: an OOM-kill notification.
func (f *flightQueue) OOM(ev memwatch.OOMEvent) {
	f.ps.run(partFlight, func() { f.line(func(r *flightrec.Recorder) { r.OOM(ev) }) })
}

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
