package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
	"github.com/gwrap/gwrap/supervisor"
)

// loop is gwrap's event loop. The relay goroutines, the worker watcher and the OOM watcher hand it
// what they see; one goroutine (run) owns the correlator and the report store, turns what it is
// handed into JSON events, and writes the post-mortems.
type loop struct {
	cfg     config
	out     *output
	store   *postmortem.Store
	watcher *probes.Watcher
	cg      *memwatch.Cgroup
	corr    *postmortem.Correlator
	timeout int // Gunicorn's timeout, seconds

	in chan any // gunicorn.Event, probes.Event, memwatch.OOMEvent

	asmMu sync.Mutex
	asm   map[supervisor.Stream]*gunicorn.Assembler

	incidents int // reports made; read after run returns
}

// inBuffer bounds what the relay may queue for the event loop. The relay never blocks on it: when
// the loop falls this far behind, events are dropped and that is said once (the lines themselves
// are always relayed).
const inBuffer = 8192

func newLoop(cfg config, out *output, store *postmortem.Store, w *probes.Watcher, cg *memwatch.Cgroup, s gunicorn.Settings) *loop {
	l := &loop{cfg: cfg, out: out, store: store, watcher: w, cg: cg, in: make(chan any, inBuffer),
		asm: map[supervisor.Stream]*gunicorn.Assembler{}, timeout: s.Timeout}
	l.corr = postmortem.NewCorrelator(s, cfg.Thresholds, postmortem.Sources{
		History: w.History,
		Deep:    w.LastDeep,
	})
	return l
}

// line is supervisor.Config.OnLine: relay the line at once, hand what it means to the loop.
func (l *loop) line(s supervisor.Stream, line []byte) {
	l.asmMu.Lock()
	a := l.asm[s]
	if a == nil {
		a = gunicorn.NewAssembler(200, 64<<10)
		l.asm[s] = a
	}
	ev, done := a.Add(line)
	l.asmMu.Unlock()
	l.out.relay(s, line, ev)
	for _, d := range done {
		l.send(d)
	}
}

// signal is supervisor.Config.OnSignal.
func (l *loop) signal(sig os.Signal, forwarded bool) {
	msg := "forwarded " + sig.String() + " to gunicorn"
	if !forwarded {
		msg = "received " + sig.String() + ", not forwarded"
	}
	l.out.event(zerolog.InfoLevel, "signal").Str("signal", sig.String()).Bool("forwarded", forwarded).Msg(msg)
}

func (l *loop) probe(ev probes.Event)    { l.send(ev) }
func (l *loop) oom(ev memwatch.OOMEvent) { l.send(ev) }

func (l *loop) send(v any) {
	select {
	case l.in <- v:
	default:
		l.out.warnOnce("loop-full", "config.warning", "gwrap's event loop fell behind; some events were not correlated (the log lines were all relayed)")
	}
}

// run owns the correlator until ctx is done, then drains what is queued and flushes every pending
// incident into a report.
func (l *loop) run(ctx context.Context) {
	tick := time.NewTicker(l.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case v := <-l.in:
			l.handle(v)
		case <-tick.C:
			l.tick()
		case <-ctx.Done():
			// The relay has finished (the supervisor returns after draining): take what is
			// queued, then the tracebacks still open, then report everything pending.
			l.drain()
			l.completeTracebacks(false)
			l.write(l.corr.Flush(time.Now()))
			return
		}
	}
}

func (l *loop) drain() {
	for {
		select {
		case v := <-l.in:
			l.handle(v)
		default:
			return
		}
	}
}

// completeTracebacks hands the correlator the error events still collecting their traceback:
// at the end all of them, on a tick those whose stream was quiet for a whole tick.
func (l *loop) completeTracebacks(idleOnly bool) {
	l.asmMu.Lock()
	var done []gunicorn.Event
	for _, a := range l.asm {
		if idleOnly {
			done = append(done, a.FlushIdle()...)
		} else {
			done = append(done, a.Flush()...)
		}
	}
	l.asmMu.Unlock()
	now := time.Now()
	for _, ev := range done {
		l.corr.Gunicorn(ev, now)
	}
}

func (l *loop) tick() {
	now := time.Now()
	if l.cg != nil {
		st := l.cg.Sample()
		for _, m := range st.Missing {
			l.out.warnOnce("cgroup-missing-"+m, "config.warning", "cannot read the cgroup's "+m+"; that evidence will be missing")
		}
		l.corr.Container(st)
	}
	// A traceback is complete when the next prefixed line arrives; on a quiet log, the tick
	// completes it once no line came for a whole tick.
	l.completeTracebacks(true)
	l.write(l.corr.Due(now))
}

func (l *loop) handle(v any) {
	now := time.Now()
	switch ev := v.(type) {
	case gunicorn.Event:
		l.gunicornEvent(ev)
		l.corr.Gunicorn(ev, now)
	case probes.Event:
		l.probeEvent(ev)
		l.corr.Probe(ev, now)
	case memwatch.OOMEvent:
		l.oomEvent(ev)
		l.corr.OOM(ev, now)
	}
}

// gunicornEvent turns the lines that matter into gwrap's worker.* events.
func (l *loop) gunicornEvent(ev gunicorn.Event) {
	switch ev.Kind {
	case gunicorn.KindTimeout:
		l.out.event(zerolog.ErrorLevel, "worker.timeout").Int("pid", ev.WorkerPID).
			Int("timeout_s", l.timeout).Msg(fmt.Sprintf("Gunicorn timed out worker %d (SIGABRT sent)", ev.WorkerPID))
	case gunicorn.KindSignaled:
		e := l.out.event(zerolog.ErrorLevel, "worker.killed").Int("pid", ev.WorkerPID).Str("signal", ev.SignalName)
		if ev.OOMHint {
			e = e.Bool("gunicorn_oom_hint", true)
		}
		e.Msg(fmt.Sprintf("worker %d died of %s", ev.WorkerPID, ev.SignalName))
	case gunicorn.KindExited:
		if !ev.Repeat {
			l.out.event(zerolog.WarnLevel, "worker.exit").Int("pid", ev.WorkerPID).Int("exit_code", ev.ExitCode).
				Msg(fmt.Sprintf("worker %d exited with code %d", ev.WorkerPID, ev.ExitCode))
		}
	case gunicorn.KindStarting:
		l.out.event(zerolog.InfoLevel, "gunicorn.start").Str("gunicorn_version", ev.Version).Msg("Gunicorn " + ev.Version + " starting")
	}
}

// probeEvent turns the watcher's events into worker.boot, worker.late and worker.gone events.
func (l *loop) probeEvent(ev probes.Event) {
	s := ev.Sample
	switch ev.Kind {
	case probes.EventBoot:
		l.out.event(zerolog.InfoLevel, "worker.boot").Int("pid", ev.ID.PID).Uint64("start_ticks", ev.ID.StartTime).
			Msg(fmt.Sprintf("worker %d booted", ev.ID.PID))
	case probes.EventLate, probes.EventStuckBoot:
		var waiting []string
		if ev.Deep != nil {
			waiting = ev.Deep.WaitingOn()
		}
		if waiting == nil {
			waiting = []string{}
		}
		msg := fmt.Sprintf("worker %d silent for %.1fs of a %ds timeout (%.0f%% CPU, state %s)", ev.ID.PID,
			s.HeartbeatAge.Seconds(), int(ev.Timeout.Seconds()), s.CPUPercent(), s.State)
		name := "worker.late"
		if ev.Kind == probes.EventStuckBoot {
			name = "worker.stuck_boot"
			msg = fmt.Sprintf("worker %d has not finished booting after %ds (timeout %ds)", ev.ID.PID, int(s.HeartbeatAge.Seconds()), int(ev.Timeout.Seconds()))
		}
		l.out.event(zerolog.WarnLevel, name).Int("pid", ev.ID.PID).
			Float64("heartbeat_age_s", round1(s.HeartbeatAge.Seconds())).Float64("timeout_s", ev.Timeout.Seconds()).
			Float64("share", ev.Share).Float64("cpu_percent", round1(s.CPUPercent())).Str("state", s.State).
			Strs("waiting_on", waiting).Uint64("rss_bytes", s.RSS()).Msg(msg)
	case probes.EventRecovered:
		l.out.event(zerolog.InfoLevel, "worker.recovered").Int("pid", ev.ID.PID).Msg(fmt.Sprintf("worker %d heartbeats again", ev.ID.PID))
	case probes.EventVanish:
		l.out.event(zerolog.InfoLevel, "worker.gone").Int("pid", ev.ID.PID).Msg(fmt.Sprintf("worker %d is gone", ev.ID.PID))
	}
}

// oomEvent reports an OOM kill at once, with the workers that are already gone or dying.
func (l *loop) oomEvent(ev memwatch.OOMEvent) {
	pids := []int{}
	for _, id := range l.watcher.Workers() {
		if !probes.NewFS(l.cfg.ProcRoot).Alive(id) {
			pids = append(pids, id.PID)
		}
	}
	l.out.event(zerolog.ErrorLevel, "oom.kill").Uint64("count", ev.Count).Uint64("total", ev.Total).Ints("pids", pids).
		Msg(fmt.Sprintf("the kernel OOM killer killed %d process(es) in the container", ev.Count))
}

// write stores each report and announces it.
func (l *loop) write(reports []postmortem.Report) {
	for _, r := range reports {
		l.incidents++
		path, err := l.store.Write(r)
		if err != nil {
			l.out.warnOnce("report-write", "config.warning", "cannot write post-mortem reports to "+l.cfg.ReportDir+": "+err.Error()+" (they still appear on stdout)")
		}
		v := r.Verdict
		l.out.event(zerolog.ErrorLevel, "postmortem").Str("cause", string(v.Cause)).Int("pid", r.Incident.PID).
			Str("kind", string(r.Incident.Kind)).Bool("near_memory_limit", v.NearMemoryLimit).Bool("ran_long", v.RanLong).
			Str("confidence", v.Confidence).Str("summary", v.Summary).Str("report", path).Str("id", r.ID).Msg(v.Summary)
	}
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }
