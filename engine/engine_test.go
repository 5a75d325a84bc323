package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/internal/guard"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

var t0 = time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC)

// bootWorker makes the master known and one worker watched, sampled healthy for 10 s.
func bootWorker(st *state, master int, id probes.ID) time.Time {
	st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: master}, Time: t0})
	st.probe(probes.Event{Kind: probes.EventBoot, ID: id, Time: t0})
	for _, s := range healthy(t0, t0.Add(10*time.Second)) {
		st.probe(probes.Event{Kind: probes.EventSample, ID: id, Time: s.Time, Sample: s})
	}
	return t0.Add(10 * time.Second)
}

func lateEvent(id probes.ID, at time.Time, share float64) probes.Event {
	return probes.Event{Kind: probes.EventLate, ID: id, Time: at, Share: share, Timeout: 30 * time.Second,
		Sample: probes.Sample{Time: at, State: "S", HeartbeatAge: time.Duration(share * float64(30*time.Second)), Heartbeats: true},
		Deep:   &probes.Deep{Wchan: "hrtimer_nanosleep"}}
}

func TestLateIsNotSaidForAWorkerToldToStop(t *testing.T) {
	for _, c := range []struct {
		name   string
		before func(st *state, at time.Time)
		want   int
	}{
		{"running", func(*state, time.Time) {}, 2},
		{"after gwrap forwarded TERM", func(st *state, at time.Time) { st.signal(syscall.SIGTERM, true, at) }, 0},
		{"after a HUP reload the master acted on", func(st *state, at time.Time) {
			st.signal(syscall.SIGHUP, true, at)
			st.line("stderr", []byte("[2026-11-25 06:00:10 +0000] [100] [INFO] Handling signal: hup"), at)
		}, 0},
		// Signals that stop no worker never mute the watch (issue 19).
		{"a forwarded HUP nobody acted on (a shell in front)", func(st *state, at time.Time) { st.signal(syscall.SIGHUP, true, at) }, 2},
		{"a HUP forwarded to the master itself, its lines elsewhere", func(st *state, at time.Time) {
			st.root = 100
			st.signal(syscall.SIGHUP, true, at)
		}, 0},
		{"a forwarded WINCH (a terminal resize)", func(st *state, at time.Time) {
			st.signal(syscall.SIGWINCH, true, at)
			st.line("stderr", []byte("[2026-11-25 06:00:10 +0000] [100] [INFO] Handling signal: winch"), at)
		}, 2},
		{"a forwarded USR2: the old workers keep serving", func(st *state, at time.Time) {
			st.signal(syscall.SIGUSR2, true, at)
			st.line("stderr", []byte("[2026-11-25 06:00:10 +0000] [100] [INFO] Handling signal: usr2"), at)
		}, 2},
		{"a TTOU with one worker stops none", func(st *state, at time.Time) {
			st.signal(syscall.SIGTTOU, true, at)
			st.line("stderr", []byte("[2026-11-25 06:00:10 +0000] [100] [INFO] Handling signal: ttou"), at)
		}, 2},

		{"after the master said Handling signal: quit", func(st *state, at time.Time) {
			st.line("stderr", []byte("[2026-11-25 06:00:10 +0000] [100] [INFO] Handling signal: quit"), at)
		}, 0},
		{"after max-requests", func(st *state, at time.Time) {
			st.line("stderr", []byte("[2026-11-25 06:00:10 +0000] [101] [INFO] Autorestarting worker after current request."), at)
		}, 0},
		{"a TTIN adds a worker, it does not stop one", func(st *state, at time.Time) { st.signal(syscall.SIGTTIN, true, at) }, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, rec := testState(gunicorn.Settings{Timeout: 30, GracefulTimeout: 30, WorkerClass: "gthread", LogLevel: "info"})
			id := probes.ID{PID: 101, StartTime: 7}
			at := bootWorker(st, 100, id)
			c.before(st, at)
			st.probe(lateEvent(id, at.Add(15*time.Second), 0.5))
			st.probe(lateEvent(id, at.Add(15*time.Second), 0.5)) // said once per share
			st.probe(lateEvent(id, at.Add(24*time.Second), 0.8))
			late := rec.named("worker.late")
			if len(late) != c.want {
				t.Fatalf("%d worker.late events, want %d", len(late), c.want)
			}
			if c.want > 0 {
				e := late[0]
				for _, k := range []string{"pid", "heartbeat_age_s", "timeout_s", "cpu_percent", "state", "waiting_on"} {
					if _, ok := e.Get(k); !ok {
						t.Errorf("worker.late lacks %s", k)
					}
				}
				if wo, _ := e.Get("waiting_on"); fmt.Sprint(wo) != "[wchan hrtimer_nanosleep]" {
					t.Errorf("waiting_on %v", wo)
				}
			}
		})
	}
}

// TestStopsEndWithTheirStop: a TTOU stops the master's oldest worker only; a stop that did not
// end its worker (graceful timeout + margin later it still lives) no longer mutes it; workers
// of another master (a USR2 upgrade's new one) are not stopped by the old master's signals.
func TestStopsEndWithTheirStop(t *testing.T) {
	st, rec := testState(gunicorn.Settings{Timeout: 30, GracefulTimeout: 10, WorkerClass: "gthread", LogLevel: "info"})
	old, young := probes.ID{PID: 101, StartTime: 1}, probes.ID{PID: 102, StartTime: 2}
	other := probes.ID{PID: 201, StartTime: 3} // a worker of the new master 200
	st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 100}, Time: t0})
	st.probe(probes.Event{Kind: probes.EventBoot, ID: old, Master: 100, Time: t0})
	st.probe(probes.Event{Kind: probes.EventBoot, ID: young, Master: 100, Time: t0.Add(time.Second)})
	st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 200}, Parent: 100, Time: t0.Add(2 * time.Second)})
	st.probe(probes.Event{Kind: probes.EventBoot, ID: other, Master: 200, Time: t0.Add(2 * time.Second)})
	at := t0.Add(10 * time.Second)
	st.line("stderr", []byte("[2026-11-25 06:00:10 +0000] [100] [INFO] Handling signal: ttou"), at)
	lates := func() []int {
		var pids []int
		for _, e := range rec.named("worker.late") {
			p, _ := e.Get("pid")
			pids = append(pids, p.(int))
		}
		return pids
	}
	for _, id := range []probes.ID{old, young, other} {
		st.probe(lateEvent(id, at.Add(5*time.Second), 0.5))
	}
	if got := fmt.Sprint(lates()); got != "[102 201]" {
		t.Errorf("late after TTOU: %s, want the young worker and the other master's", got)
	}
	// The old worker outlived its stop (10 s graceful + 5 s): it is watched again.
	st.probe(probes.Event{Kind: probes.EventRecovered, ID: old, Time: at.Add(20 * time.Second)})
	st.probe(lateEvent(old, at.Add(21*time.Second), 0.5))
	if got := fmt.Sprint(lates()); got != "[102 201 101]" {
		t.Errorf("late after the stop was over: %s", got)
	}
	// The old master's TERM (the end of an upgrade) stops its workers, not the new master's.
	st.line("stderr", []byte("[2026-11-25 06:00:40 +0000] [100] [INFO] Handling signal: term"), at.Add(30*time.Second))
	for _, id := range []probes.ID{young, other} {
		st.probe(probes.Event{Kind: probes.EventRecovered, ID: id, Time: at.Add(31 * time.Second)})
		st.probe(lateEvent(id, at.Add(32*time.Second), 0.5))
	}
	if got := fmt.Sprint(lates()); got != "[102 201 101 201]" {
		t.Errorf("late after the old master's TERM: %s", got)
	}
	if !st.shutdown.IsZero() {
		t.Error("the old master's stop was taken for Gunicorn's shutdown while a new master serves")
	}
}

func TestStuckBootThatFinishesIsNotAnIncident(t *testing.T) {
	st, rec := testState(gunicorn.Settings{Timeout: 3, WorkerClass: "sync", LogLevel: "info"})
	id := probes.ID{PID: 201, StartTime: 3}
	st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 200}, Time: t0})
	st.probe(probes.Event{Kind: probes.EventBoot, ID: id, Time: t0})
	stuck := probes.Event{Kind: probes.EventStuckBoot, ID: id, Time: t0.Add(4 * time.Second), Timeout: 3 * time.Second,
		Sample: probes.Sample{HeartbeatAge: 4 * time.Second}}
	st.probe(stuck)
	st.tick(t0.Add(30 * time.Second)) // the window closed long ago: still booting, still open
	st.probe(probes.Event{Kind: probes.EventRecovered, ID: id, Time: t0.Add(12 * time.Second)})
	st.tick(t0.Add(40 * time.Second))
	st.flush(t0.Add(50 * time.Second))
	if n := len(rec.named("worker.stuck_boot")); n != 1 {
		t.Errorf("%d worker.stuck_boot", n)
	}
	boots := rec.named("worker.boot")
	if len(boots) != 2 || !strings.Contains(boots[1].Message, "finished booting after 12.0s") {
		t.Errorf("worker.boot events: %+v", boots)
	}
	if len(rec.reports) != 0 {
		t.Errorf("a boot that finished was reported: %s", rec.reports[0].Verdict.Summary)
	}
}

func TestStuckBootThatDiesIsBootTimeout(t *testing.T) {
	st, rec := testState(gunicorn.Settings{Timeout: 3, WorkerClass: "sync", LogLevel: "warning"})
	id := probes.ID{PID: 301, StartTime: 3}
	st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 300}, Time: t0})
	st.probe(probes.Event{Kind: probes.EventBoot, ID: id, Time: t0})
	st.probe(probes.Event{Kind: probes.EventStuckBoot, ID: id, Time: t0.Add(4 * time.Second), Timeout: 3 * time.Second})
	st.probe(probes.Event{Kind: probes.EventVanish, ID: id, Time: t0.Add(20 * time.Second)})
	st.tick(t0.Add(30 * time.Second))
	if len(rec.reports) != 1 || rec.reports[0].Verdict.Cause != postmortem.CauseBootTimeout {
		t.Fatalf("reports %+v", rec.reports)
	}
}

func TestOOMKillNamesTheDyingVictim(t *testing.T) {
	st, rec := testState(gunicorn.Settings{Timeout: 30, WorkerClass: "sync", LogLevel: "info"})
	victim, other := probes.ID{PID: 401, StartTime: 1}, probes.ID{PID: 402, StartTime: 1}
	proc := newFakeProc(400)
	proc.install(st)
	proc.child(victim)
	proc.child(other)
	at := bootWorker(st, 400, victim)
	st.probe(probes.Event{Kind: probes.EventBoot, ID: other, Time: t0})
	proc.kill(401)
	proc.moved(st, at, 3*time.Millisecond, 1)
	oom := rec.named("oom.kill")
	if len(oom) != 1 {
		t.Fatalf("%d oom.kill", len(oom))
	}
	if pids, _ := oom[0].Get("pids"); fmt.Sprint(pids) != "[401]" {
		t.Errorf("oom.kill pids %v, want [401]", pids)
	}
	proc.reap(401)
	st.probe(probes.Event{Kind: probes.EventVanish, ID: victim, Time: at.Add(400 * time.Millisecond)})
	st.line("stderr", []byte("[2026-11-25 06:00:11 +0000] [400] [ERROR] Worker (pid:401) was sent SIGKILL! Perhaps out of memory?"), at.Add(500*time.Millisecond))
	st.tick(at.Add(10 * time.Second))
	if len(rec.reports) != 1 || rec.reports[0].Incident.PID != 401 || rec.reports[0].Verdict.Cause != postmortem.CauseOOMKilled {
		t.Fatalf("reports %+v", rec.reports)
	}
}

// TestOOMKillBeforeTheVictimIsKnown: when /proc could not be read as the counter moved, the move
// waits for the victim's vanish to name it.
func TestOOMKillBeforeTheVictimIsKnown(t *testing.T) {
	st, rec := testState(gunicorn.Settings{Timeout: 30, WorkerClass: "sync", LogLevel: "warning"})
	id := probes.ID{PID: 501, StartTime: 1}
	at := bootWorker(st, 500, id)
	st.oom(oomIn{ev: memwatch.OOMEvent{Time: at, Count: 1, Total: 1}}, at)
	oom := rec.named("oom.kill")
	if pids, _ := oom[0].Get("pids"); len(oom) != 1 || fmt.Sprint(pids) != "[]" || !strings.Contains(oom[0].Message, "not identified yet") {
		t.Fatalf("oom.kill %+v", oom)
	}
	st.probe(probes.Event{Kind: probes.EventVanish, ID: id, Time: at.Add(900 * time.Millisecond)})
	st.tick(at.Add(10 * time.Second))
	if len(rec.reports) != 1 || rec.reports[0].Incident.PID != 501 || rec.reports[0].Incident.Kind != postmortem.KindOOMKill {
		t.Fatalf("reports %+v", rec.reports)
	}
}

func TestGunicornExitAndBootFailure(t *testing.T) {
	st, rec := testState(gunicorn.Settings{Timeout: 30, WorkerClass: "sync", LogLevel: "info"})
	st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 600}, Time: t0})
	// The worker fails before the watcher's first sweep: only its boot line, checked in /proc,
	// makes it known.
	proc := newFakeProc(600)
	proc.install(st)
	proc.child(probes.ID{PID: 601, StartTime: 9})
	for i, l := range []string{
		"[2026-11-25 06:00:00 +0000] [600] [INFO] Starting gunicorn 23.0.0",
		"[2026-11-25 06:00:00 +0000] [601] [INFO] Booting worker with pid: 601",
		"[2026-11-25 06:00:00 +0000] [601] [ERROR] Exception in worker process",
		"Traceback (most recent call last):",
		`  File "/app/app.py", line 1, in <module>`,
		"    import nosuchmodule",
		"ModuleNotFoundError: No module named 'nosuchmodule'",
		"[2026-11-25 06:00:00 +0000] [601] [INFO] Worker exiting (pid: 601)",
		"[2026-11-25 06:00:01 +0000] [600] [ERROR] Worker (pid:601) exited with code 3",
		"[2026-11-25 06:00:01 +0000] [600] [ERROR] Shutting down: Master",
		"[2026-11-25 06:00:01 +0000] [600] [ERROR] Reason: Worker failed to boot.",
	} {
		if strings.Contains(l, "exited with code") {
			proc.reap(601)
		}
		st.line("stderr", []byte(l), t0.Add(time.Duration(i)*10*time.Millisecond))
	}
	st.childExit(ExitInfo{Code: 3, Reason: "gunicorn exited with code 3"}, t0.Add(time.Second))
	st.flush(t0.Add(2 * time.Second))
	exits := rec.named("gunicorn.exit")
	if len(exits) != 1 {
		t.Fatalf("%d gunicorn.exit", len(exits))
	}
	if code, _ := exits[0].Get("exit_code"); code != 3 {
		t.Errorf("exit_code %v", code)
	}
	if len(rec.reports) != 1 {
		t.Fatalf("%d reports", len(rec.reports))
	}
	r := rec.reports[0]
	if r.Incident.Kind != postmortem.KindBootFailure || !strings.Contains(r.Verdict.Summary, "ModuleNotFoundError") {
		t.Errorf("boot failure: %s %s", r.Incident.Kind, r.Verdict.Summary)
	}
	if n := len(rec.named("worker.exit")); n != 1 {
		t.Errorf("%d worker.exit", n)
	}
}

// TestEveryEventHasTheContractFields: a whole run's events carry a time, a name and a message.
func TestEveryEventHasTheContractFields(t *testing.T) {
	_, rec := scenario{log: "gunicorn-21.2.0-written.log", ooms: []string{"03:20:50.400"}}.run(t)
	seen := map[string]bool{}
	for _, e := range rec.events {
		seen[e.Name] = true
		if e.Time.IsZero() || e.Name == "" || e.Message == "" {
			t.Errorf("incomplete event %+v", e)
		}
	}
	for _, name := range []string{"gunicorn.start", "worker.boot", "worker.timeout", "worker.killed", "worker.exit", "worker.gone", "oom.kill", "postmortem"} {
		if !seen[name] {
			t.Errorf("no %s event", name)
		}
	}
}

// TestRecycledWorkersAreForgotten: max-requests recycling ten thousand workers leaves the engine's
// memory as small as its live workers, and makes no incident.
func TestRecycledWorkersAreForgotten(t *testing.T) {
	st, rec := testState(gunicorn.Settings{Timeout: 30, WorkerClass: "sync", LogLevel: "info"})
	st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 1}, Time: t0})
	now := t0
	for i := 0; i < 10000; i++ {
		pid := 1000 + i%30000
		id := probes.ID{PID: pid, StartTime: uint64(i)}
		st.line("stderr", []byte(fmt.Sprintf("[2026-11-25 06:00:00 +0000] [%d] [INFO] Booting worker with pid: %d", pid, pid)), now)
		if i%2 == 0 { // half of them live long enough for the watcher to see them
			st.probe(probes.Event{Kind: probes.EventBoot, ID: id, Time: now})
			st.probe(probes.Event{Kind: probes.EventSample, ID: id, Time: now, Sample: probes.Sample{Time: now, HeartbeatAge: 0}})
		}
		st.line("stderr", []byte(fmt.Sprintf("[2026-11-25 06:00:00 +0000] [%d] [INFO] Autorestarting worker after current request.", pid)), now)
		st.line("stderr", []byte(fmt.Sprintf("[2026-11-25 06:00:00 +0000] [%d] [INFO] Worker exiting (pid: %d)", pid, pid)), now)
		if i%2 == 0 {
			st.probe(probes.Event{Kind: probes.EventVanish, ID: id, Time: now.Add(50 * time.Millisecond)})
		}
		now = now.Add(100 * time.Millisecond)
		st.tick(now)
	}
	st.tick(now.Add(keepGone + time.Minute))
	if len(rec.reports) != 0 {
		t.Fatalf("%d reports for recycled workers, first: %s", len(rec.reports), rec.reports[0].Verdict.Summary)
	}
	if n := len(st.w.byID) + len(st.w.byPID) + len(st.open); n != 0 {
		t.Errorf("remembers %d things: byID %d byPID %d open %d", n, len(st.w.byID), len(st.w.byPID), len(st.open))
	}
}

// TestRunDrainsAtShutdown: lines queued when the producers stop are all relayed, and what they
// said is decided before Run returns; a batch of probe events is taken in order.
func TestRunDrainsAtShutdown(t *testing.T) {
	rec := &recorder{}
	e := New(Config{Settings: gunicorn.Settings{Timeout: 30, LogLevel: "info"}, Reports: rec, Interval: time.Hour}, rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	// A sweep's events in one batch, as gwrap hands them: the crash line below counts only if
	// the batch made worker 11 known, in order (master first).
	e.Sweep(nil, []probes.Event{
		{Kind: probes.EventMaster, ID: probes.ID{PID: 10}, Time: time.Now()},
		{Kind: probes.EventBoot, ID: probes.ID{PID: 11, StartTime: 1}, Time: time.Now()},
	})
	for i := 0; i < 1000; i++ {
		e.Line("stdout", []byte(fmt.Sprintf("line %d", i)))
	}
	e.Line("stderr", []byte("[2026-11-25 06:00:00 +0000] [10] [ERROR] Worker (pid:11) was sent SIGSEGV!"))
	e.ChildExit(ExitInfo{Code: 0})
	cancel()
	<-done
	if rec.relayed != 1001 {
		t.Errorf("%d lines relayed, want 1001", rec.relayed)
	}
	if len(rec.reports) != 1 || rec.reports[0].Verdict.Cause != postmortem.CauseCrashed {
		t.Errorf("reports %+v", rec.reports)
	}
	if e.Reported() != 1 || len(rec.named("gunicorn.exit")) != 1 {
		t.Errorf("reported %d, gunicorn.exit %d", e.Reported(), len(rec.named("gunicorn.exit")))
	}
}

func TestDecide(t *testing.T) {
	code := func(c int) *int { return &c }
	for _, c := range []struct {
		name string
		f    facts
		ok   bool
		kind postmortem.Kind
	}{
		{"recycle at warning level", facts{Died: true}, false, ""},
		{"recycle at info level", facts{Died: true, Exiting: true, Stopping: true, ExitsVisible: true}, false, ""},
		{"silent vanish at info level", facts{Died: true, ExitsVisible: true}, true, postmortem.KindSignal},
		{"exit 0", facts{Died: true, ExitCode: code(0)}, false, ""},
		{"exit 1", facts{Died: true, ExitCode: code(1)}, true, postmortem.KindExit},
		{"exit 1 during a stop", facts{Died: true, ExitCode: code(1), Stopping: true}, false, ""},
		{"boot failure", facts{Died: true, ExitCode: code(3), BootFailure: true}, true, postmortem.KindBootFailure},
		{"boot failure on 20.1 (no exit line; the worker said it was exiting)", facts{Exiting: true, Stopping: true, BootFailure: true}, true, postmortem.KindBootFailure},
		{"SIGSEGV", facts{Died: true, Signal: 11}, true, postmortem.KindSignal},
		{"SIGSEGV during a stop", facts{Died: true, Signal: 11, Stopping: true}, true, postmortem.KindSignal},
		{"SIGTERM", facts{Died: true, Signal: 15}, false, ""},
		{"SIGKILL", facts{Died: true, Signal: 9}, true, postmortem.KindSignal},
		{"SIGKILL after graceful_timeout", facts{Died: true, Signal: 9, Stopping: true}, false, ""},
		{"SIGKILL during a stop by the OOM killer", facts{Died: true, Signal: 9, Stopping: true, OOMKilled: true}, true, postmortem.KindOOMKill},
		{"timeout escalation", facts{Died: true, Signal: 9, Timeout: true}, true, postmortem.KindTimeout},
		{"timeout and OOM", facts{Died: true, Timeout: true, OOMKilled: true}, true, postmortem.KindTimeout},
		{"stuck boot still booting", facts{StuckBoot: true}, false, ""},
		{"stuck boot died", facts{StuckBoot: true, Died: true}, true, postmortem.KindTimeout},
		{"stuck boot at the end", facts{StuckBoot: true, Final: true}, true, postmortem.KindTimeout},
	} {
		ok, kind := decide(c.f)
		if ok != c.ok || kind != c.kind {
			t.Errorf("%s: decide = %v %q, want %v %q", c.name, ok, kind, c.ok, c.kind)
		}
	}
}

// BenchmarkIdleSecond: the engine's per-second cost with 8 healthy workers and nothing open: a
// cgroup sample, 8 worker samples and a tick.
func BenchmarkIdleSecond(b *testing.B) {
	st, _ := testState(gunicorn.Settings{Timeout: 30, WorkerClass: "sync", LogLevel: "info"})
	var ids []probes.ID
	for i := 0; i < 8; i++ {
		id := probes.ID{PID: 100 + i, StartTime: 1}
		ids = append(ids, id)
		st.probe(probes.Event{Kind: probes.EventBoot, ID: id, Time: t0})
	}
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(time.Second)
		st.containerSample(memwatch.Stats{Time: now})
		for _, id := range ids {
			st.probe(probes.Event{Kind: probes.EventSample, ID: id, Time: now, Sample: probes.Sample{Time: now}})
		}
		st.tick(now)
	}
}

// TestNoSecretReachesAReport: secrets in the lines and traceback of a dead worker appear in
// neither the JSON nor the HTML of its report.
func TestNoSecretReachesAReport(t *testing.T) {
	rs, _ := scenario{lines: []string{
		"[2026-11-25 03:42:00 +0000] [1] [INFO] Starting gunicorn 22.0.0",
		"[2026-11-25 03:42:05 +0000] [7] [INFO] Booting worker with pid: 7",
		"[2026-11-25 03:42:36 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:7)",
		"[2026-11-25 03:42:36 +0000] [7] [ERROR] Error handling request /login?token=tok-SECRET-1",
		"Traceback (most recent call last):",
		`  File "/srv/app/app.py", line 9, in app`,
		`    db = connect("postgresql://app:pw-SECRET-2@db:5432/app", password="pw-SECRET-3")`,
		"SystemExit: 1",
		"[2026-11-25 03:42:36 +0000] [7] [INFO] Worker exiting (pid: 7)",
	}}.run(t)
	if len(rs) != 1 {
		t.Fatalf("%d reports", len(rs))
	}
	dir := t.TempDir()
	path, err := postmortem.NewStore(dir, postmortem.Retention{}).Write(rs[7])
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, strings.TrimSuffix(path, ".json") + ".html"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "SECRET") {
			t.Errorf("%s leaks a secret", filepath.Base(p))
		}
		if !strings.Contains(string(b), "app.py") {
			t.Errorf("%s lost the traceback", filepath.Base(p))
		}
	}
}

// TestStackInLateAndReport: the stack taken with a late worker's deep sample names the app's frame
// in worker.late and goes whole into the post-mortem; a later deep sample without one keeps it.
func TestStackInLateAndReport(t *testing.T) {
	st, rec := testState(gunicorn.Settings{Timeout: 30, WorkerClass: "sync", LogLevel: "info"})
	id := probes.ID{PID: 701, StartTime: 1}
	at := bootWorker(st, 700, id)
	late := lateEvent(id, at.Add(15*time.Second), 0.5)
	late.Deep.Stack = &probes.PyStack{Frames: []string{`gunicorn/workers/sync.py:135 in handle`, `app.py:42 in report`}, Thread: "MainThread", Top: "app.py:42 in report"}
	st.probe(late)
	st.probe(lateEvent(id, at.Add(24*time.Second), 0.8))
	for _, s := range busy(1, "S", true)(at, at.Add(30*time.Second)) {
		st.probe(probes.Event{Kind: probes.EventSample, ID: id, Time: s.Time, Sample: s})
	}
	st.line("stderr", []byte("[2026-11-25 06:00:40 +0000] [700] [CRITICAL] WORKER TIMEOUT (pid:701)"), at.Add(31*time.Second))
	st.probe(probes.Event{Kind: probes.EventVanish, ID: id, Time: at.Add(32 * time.Second)})
	st.tick(at.Add(time.Minute))
	lates := rec.named("worker.late")
	if top, _ := lates[0].Get("stack_top"); len(lates) != 2 || top != "app.py:42 in report" {
		t.Errorf("worker.late %+v", lates)
	}
	if len(rec.reports) != 1 {
		t.Fatalf("%d reports", len(rec.reports))
	}
	inc := rec.reports[0].Incident
	if inc.StackTop != "app.py:42 in report" || len(inc.PythonStack) != 2 || inc.StackThread != "MainThread" {
		t.Errorf("report stack %q %v %q", inc.StackTop, inc.PythonStack, inc.StackThread)
	}
	if !strings.Contains(rec.reports[0].Verdict.Summary, "app.py:42 in report") {
		t.Errorf("summary does not quote the frame: %s", rec.reports[0].Verdict.Summary)
	}
}

// TestTwoOOMKillsInARow: two workers OOM-killed 260 ms apart are two oom_killed incidents, each
// claimed by its own event (the matrix once saw the second called "SIGKILLed without the OOM
// killer").
func TestTwoOOMKillsInARow(t *testing.T) {
	st, rec := testState(gunicorn.Settings{Timeout: 30, WorkerClass: "sync", LogLevel: "info"})
	a, b := probes.ID{PID: 801, StartTime: 1}, probes.ID{PID: 802, StartTime: 1}
	proc := newFakeProc(800)
	proc.install(st)
	proc.child(a)
	proc.child(b)
	at := bootWorker(st, 800, a)
	st.probe(probes.Event{Kind: probes.EventBoot, ID: b, Time: t0})
	proc.kill(801)
	proc.moved(st, at, 3*time.Millisecond, 1)
	proc.reap(801)
	st.line("stderr", []byte("[2026-11-25 06:00:10 +0000] [800] [ERROR] Worker (pid:801) was sent SIGKILL! Perhaps out of memory?"), at.Add(10*time.Millisecond))
	proc.kill(802)
	proc.moved(st, at.Add(260*time.Millisecond), 3*time.Millisecond, 1)
	proc.reap(802)
	st.line("stderr", []byte("[2026-11-25 06:00:10 +0000] [800] [ERROR] Worker (pid:802) was sent SIGKILL! Perhaps out of memory?"), at.Add(270*time.Millisecond))
	st.probe(probes.Event{Kind: probes.EventVanish, ID: a, Time: at.Add(900 * time.Millisecond)})
	st.probe(probes.Event{Kind: probes.EventVanish, ID: b, Time: at.Add(900 * time.Millisecond)})
	st.tick(at.Add(time.Minute))
	var got []string
	for _, r := range rec.reports {
		got = append(got, fmt.Sprintf("%d %s", r.Incident.PID, r.Verdict.Cause))
	}
	if fmt.Sprint(got) != "[801 oom_killed 802 oom_killed]" {
		t.Errorf("reports %v", got)
	}
	for i, e := range rec.named("oom.kill") {
		if pids, _ := e.Get("pids"); fmt.Sprint(pids) != fmt.Sprintf("[%d]", 801+i) {
			t.Errorf("oom.kill %d names %v", i, pids)
		}
	}
}

// TestDeathsWithoutGunicornsLines: when a worker's lines do not reach gwrap (--error-logfile
// FILE, a custom logger, a log level gwrap could not read), its death is judged from /proc and
// the cgroup alone: gone with a fresh heartbeat is no incident (a max-requests recycle), gone
// with a heartbeat stale past the timeout is a timeout. A worker whose boot line gwrap saw and
// that vanished without a word is still reported (the log would have shown a normal exit).
func TestDeathsWithoutGunicornsLines(t *testing.T) {
	for _, c := range []struct {
		name     string
		settings gunicorn.Settings
		bootLine bool
		samples  sampleGen
		want     string // "" no report, else kind/cause
	}{
		{"recycled, error log in a file", gunicorn.Settings{Timeout: 30, LogLevel: "info", ErrorLog: "/var/log/g.log"}, false, healthy, ""},
		{"recycled, log level unknown", gunicorn.Settings{Timeout: 30}, false, healthy, ""},
		{"recycled, a custom logger that prints elsewhere", gunicorn.Settings{Timeout: 30, LogLevel: "info", LoggerClass: "app.Logger"}, false, healthy, ""},
		{"timed out, error log in a file", gunicorn.Settings{Timeout: 30, LogLevel: "info", ErrorLog: "/var/log/g.log"}, false, busy(1, "S", true), "timeout/blocked"},
		{"timed out, log level unknown", gunicorn.Settings{Timeout: 30}, false, busy(99, "R", true), "timeout/cpu_bound"},
		{"gone silently though its lines reach gwrap", gunicorn.Settings{Timeout: 30, LogLevel: "info"}, true, healthy, "signal/crashed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.settings.WorkerClass = "sync"
			st, rec := testState(c.settings)
			id := probes.ID{PID: 501, StartTime: 9}
			st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 500}, Time: t0})
			if c.bootLine {
				st.line("stderr", []byte("[2026-11-25 06:00:00 +0000] [501] [INFO] Booting worker with pid: 501"), t0)
			}
			st.probe(probes.Event{Kind: probes.EventBoot, ID: id, Master: 500, Time: t0})
			end := t0.Add(40 * time.Second)
			for _, s := range c.samples(t0, end) {
				st.containerSample(memwatch.Stats{Time: s.Time, OOMKill: memwatch.Value{V: 0, Known: true}})
				st.probe(probes.Event{Kind: probes.EventSample, ID: id, Time: s.Time, Sample: s})
			}
			st.probe(probes.Event{Kind: probes.EventVanish, ID: id, Time: end.Add(200 * time.Millisecond)})
			st.tick(end.Add(10 * time.Second))
			st.flush(end.Add(11 * time.Second))
			got := ""
			if len(rec.reports) == 1 {
				r := rec.reports[0]
				got = string(r.Incident.Kind) + "/" + string(r.Verdict.Cause)
				if c.want == "timeout/blocked" && (!r.Incident.TimeoutInferred || !r.Verdict.RanLong || r.Incident.Timeout) {
					t.Errorf("incident %+v", r.Incident)
				}
			} else if len(rec.reports) > 1 {
				t.Fatalf("%d reports", len(rec.reports))
			}
			if got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

// TestFindingTheMaster: a start line names its pid to the watcher (a hint); when the watcher has
// not found the master a few seconds after Gunicorn's first line, gwrap says so once; when it
// found workers but none of Gunicorn's lines come though the settings say they should, it says
// that once.
func TestFindingTheMaster(t *testing.T) {
	codes := func(rec *recorder) []string {
		var out []string
		for _, e := range rec.named("config.warning") {
			c, _ := e.Get("code")
			out = append(out, c.(string))
		}
		return out
	}
	t.Run("not found", func(t *testing.T) {
		st, rec := testState(gunicorn.Settings{Timeout: 30, LogLevel: "info"})
		var hints []int
		st.cfg.OnMasterHint = func(pid int) { hints = append(hints, pid) }
		st.line("stderr", []byte("[2026-11-25 06:00:00 +0000] [700] [INFO] Starting gunicorn 23.0.0"), t0)
		st.line("stderr", []byte("[2026-11-25 06:00:00 +0000] [700] [INFO] Listening at: http://0.0.0.0:8000 (700)"), t0)
		if fmt.Sprint(hints) != "[700 700]" {
			t.Errorf("hints %v", hints)
		}
		if !st.busy() {
			t.Error("the engine does not tick while it waits for the master")
		}
		st.tick(t0.Add(4 * time.Second))
		if got := codes(rec); len(got) != 0 {
			t.Errorf("warned too early: %v", got)
		}
		st.tick(t0.Add(6 * time.Second))
		st.tick(t0.Add(9 * time.Second))
		if got := fmt.Sprint(codes(rec)); got != "[master_not_found]" {
			t.Errorf("warnings %s", got)
		}
		if st.busy() {
			t.Error("still ticking once it said so")
		}
	})
	t.Run("found in time", func(t *testing.T) {
		st, rec := testState(gunicorn.Settings{Timeout: 30, LogLevel: "info"})
		st.line("stderr", []byte("[2026-11-25 06:00:00 +0000] [700] [INFO] Starting gunicorn 23.0.0"), t0)
		st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 700}, Time: t0.Add(time.Second)})
		id := probes.ID{PID: 701, StartTime: 1}
		st.probe(probes.Event{Kind: probes.EventBoot, ID: id, Master: 700, Time: t0.Add(time.Second)})
		st.line("stderr", []byte("[2026-11-25 06:00:01 +0000] [701] [INFO] Booting worker with pid: 701"), t0.Add(time.Second))
		for _, s := range healthy(t0.Add(time.Second), t0.Add(20*time.Second)) {
			st.probe(probes.Event{Kind: probes.EventSample, ID: id, Time: s.Time, Sample: s})
		}
		st.tick(t0.Add(20 * time.Second))
		if got := codes(rec); len(got) != 0 {
			t.Errorf("warnings %v", got)
		}
	})
	for _, c := range []struct {
		name     string
		settings gunicorn.Settings
		want     string
	}{
		{"no line reaches gwrap though the settings say they should", gunicorn.Settings{Timeout: 30, LogLevel: "info"}, "[lines_not_seen]"},
		{"the error log is a file: the start-up lint said so", gunicorn.Settings{Timeout: 30, LogLevel: "info", ErrorLog: "/var/log/g.log"}, "[]"},
		{"at log level warning no INFO line is expected", gunicorn.Settings{Timeout: 30, LogLevel: "warning"}, "[]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, rec := testState(c.settings)
			st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 700}, Time: t0})
			id := probes.ID{PID: 701, StartTime: 1}
			st.probe(probes.Event{Kind: probes.EventBoot, ID: id, Master: 700, Time: t0})
			for _, s := range healthy(t0, t0.Add(20*time.Second)) {
				st.probe(probes.Event{Kind: probes.EventSample, ID: id, Time: s.Time, Sample: s})
			}
			if got := fmt.Sprint(codes(rec)); got != c.want {
				t.Errorf("warnings %s, want %s", got, c.want)
			}
		})
	}
}

// TestPanicTurnsTheEngineOff: a panic while the engine takes an input is told once, and from then
// on the engine only relays Gunicorn's lines (every one, in order): it reports nothing from a
// state it can no longer trust, and never takes gwrap down.
func TestPanicTurnsTheEngineOff(t *testing.T) {
	rec := &recorder{}
	var panics []guard.Panic
	told := 0 // New tells the limits first; the class line makes the second call, which panics
	e := New(Config{Settings: gunicorn.Settings{Timeout: 30, LogLevel: "info"}, Reports: rec, Interval: time.Hour,
		OnLimits: func(probes.Limits) {
			if told++; told > 1 {
				var m map[string]int
				m["class"]++
			}
		},
		OnPanic: func(p guard.Panic) { panics = append(panics, p) }}, rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	e.Sweep(nil, []probes.Event{
		{Kind: probes.EventMaster, ID: probes.ID{PID: 10}, Time: time.Now()},
		{Kind: probes.EventBoot, ID: probes.ID{PID: 11, StartTime: 1}, Time: time.Now()},
	})
	e.Line("stderr", []byte("[2026-11-25 06:00:00 +0000] [10] [INFO] Using worker: gthread"))
	for i := 0; i < 100; i++ {
		e.Line("stdout", []byte(fmt.Sprintf("line %d", i)))
	}
	e.Line("stderr", []byte("[2026-11-25 06:00:01 +0000] [10] [ERROR] Worker (pid:11) was sent SIGSEGV!"))
	e.ChildExit(ExitInfo{Code: 0})
	cancel()
	<-done
	if len(panics) != 1 || !strings.Contains(panics[0].Message, "nil map") || !strings.Contains(panics[0].Where, "engine/engine_test.go") {
		t.Fatalf("panics told: %+v", panics)
	}
	if rec.relayed != 102 {
		t.Errorf("%d lines relayed, want 102", rec.relayed)
	}
	if len(rec.reports) != 0 || len(rec.named("postmortem")) != 0 || len(rec.named("gunicorn.exit")) != 0 {
		t.Errorf("an engine that panicked went on: reports %d, events %v", len(rec.reports), rec.events)
	}
}
