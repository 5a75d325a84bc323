package engine

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// dirtyDay is the clock of the dirty scenarios: Gunicorn 26.2.2, master 100, the dirty arbiter
// 101 (its socket /tmp/gunicorn-dirty-x/arbiter.sock), HTTP worker 102, dirty workers from 110,
// --timeout 4, --dirty-timeout 6, one dirty thread.
var dirtyDay = time.Date(2026, 12, 3, 4, 42, 0, 0, time.UTC)

const arbiterSock = "/tmp/gunicorn-dirty-x/arbiter.sock"

// dirtySim drives the engine's state through a dirty pool's life, second by second.
type dirtySim struct {
	t        *testing.T
	st       *state
	rec      *recorder
	now      time.Time
	follows  []string
	onDirty  []time.Duration
	oomTotal uint64
}

func newDirtySim(t *testing.T, settingsKnow bool) *dirtySim {
	s := gunicorn.Settings{Timeout: 4, GracefulTimeout: 30, Workers: 1, WorkerClass: "sync", LogLevel: "info", DirtyTimeout: 6, DirtyThreads: 1}
	if settingsKnow {
		s.DirtyWorkers, s.DirtyApps = 1, []string{"dirty:Heavy"}
	}
	d := &dirtySim{t: t, now: dirtyDay}
	d.st, d.rec = testState(s)
	d.st.cfg.Follow = func(pid int, on bool) { d.follows = append(d.follows, fmt.Sprint(pid, on)) }
	d.st.cfg.OnDirty = func(t time.Duration) { d.onDirty = append(d.onDirty, t) }
	d.st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 100}, Time: d.now})
	d.line(100, "INFO", "Starting gunicorn 26.2.2")
	d.line(100, "INFO", "Spawned dirty arbiter (pid: 101) at "+arbiterSock)
	d.st.probe(probes.Event{Kind: probes.EventBoot, ID: probes.ID{PID: 102, StartTime: 1002}, Time: d.now})
	return d
}

// line writes one of Gunicorn's lines from pid now.
func (d *dirtySim) line(pid int, level, msg string) {
	d.st.line("stderr", []byte(fmt.Sprintf("[%s] [%d] [%s] %s", d.now.Format("2006-01-02 15:04:05 -0700"), pid, level, msg)), d.now)
}

func (d *dirtySim) raw(l string) { d.st.line("stderr", []byte(l), d.now) }

// step moves the clock, taking a cgroup sample and ticking the engine each second.
func (d *dirtySim) step(dt time.Duration) {
	for end := d.now.Add(dt); d.now.Before(end); {
		d.now = d.now.Add(min(time.Second, end.Sub(d.now)))
		d.st.containerSample(memwatch.Stats{Time: d.now, Version: 1, Usage: memwatch.Value{V: 300 << 20, Known: true},
			WorkingSet: memwatch.Value{V: 200 << 20, Known: true}, Limit: memwatch.Value{V: 1 << 30, Known: true},
			OOMKill: memwatch.Value{V: d.oomTotal, Known: true}})
		d.st.tick(d.now)
	}
}

func (d *dirtySim) sample(id probes.ID, role probes.Role, cpu float64, state string, age time.Duration) {
	d.st.probe(probes.Event{Kind: probes.EventSample, ID: id, Time: d.now, Role: role, Sample: probes.Sample{Time: d.now,
		CPUUser: cpu, State: state, RSSAnon: 80 << 20, HeartbeatAge: age, Heartbeats: true}})
}

func (d *dirtySim) reports() map[string]postmortem.Report {
	out := map[string]postmortem.Report{}
	for _, r := range d.rec.reports {
		out[fmt.Sprintf("%d/%s", r.Incident.PID, r.Incident.Kind)] = r
	}
	return out
}

func (d *dirtySim) events(name string) []Event { return d.rec.named(name) }

var (
	arbiterID = probes.ID{PID: 101, StartTime: 1001}
	httpID    = probes.ID{PID: 102, StartTime: 1002}
)

// bootDirty makes the arbiter and one dirty worker known, as the watcher and the lines do.
func (d *dirtySim) bootDirty(pid int) probes.ID {
	id := probes.ID{PID: pid, StartTime: uint64(1000 + pid)}
	d.line(101, "INFO", fmt.Sprintf("Spawned dirty worker (pid: %d) with apps: ['dirty:Heavy']", pid))
	d.st.probe(probes.Event{Kind: probes.EventArbiter, ID: arbiterID, Time: d.now, DirtySockets: []string{arbiterSock}})
	d.st.probe(probes.Event{Kind: probes.EventBoot, ID: id, Time: d.now, Role: probes.RoleDirty})
	return id
}

func spinStack(running bool) *probes.PyStack {
	st := &probes.PyStack{Frames: []string{"thread 0x1", "  /srv/apps/dirty.py:28 in spin"}, Top: "apps/misbehave.py:21 in spin"}
	if running {
		st.DirtyRunning, st.DirtyAction = true, "spin"
	} else {
		st.Top = ""
	}
	return st
}

// TestDirtyChainAndExecutionTimeout: an HTTP worker waits on a dirty worker computing past both
// timeouts. Its post-mortem names the dirty worker, the action and what it did; the action's
// execution timeout is an incident of its own kind, cpu_bound, still running when reported,
// followed until it ends, and then the report is written again with the end.
func TestDirtyChainAndExecutionTimeout(t *testing.T) {
	d := newDirtySim(t, true)
	dirty := d.bootDirty(110)
	d.step(10 * time.Second)
	start := d.now
	for i := 1; i <= 13; i++ { // the HTTP worker waits on the arbiter; the dirty worker computes
		d.step(time.Second)
		d.sample(dirty, probes.RoleDirty, 99, "R", time.Duration(i%3)*time.Second)
		if d.now.Sub(start) <= 5*time.Second {
			d.sample(httpID, probes.RoleHTTP, 0, "S", d.now.Sub(start)+time.Second)
		}
		if i == 3 {
			d.st.probe(probes.Event{Kind: probes.EventLate, ID: httpID, Time: d.now, Share: 0.5, Timeout: 4 * time.Second,
				Sample: probes.Sample{Time: d.now, State: "S", HeartbeatAge: 4 * time.Second, Heartbeats: true},
				Deep:   &probes.Deep{Time: d.now, Sockets: []probes.Socket{{Proto: "unix", Remote: arbiterSock, State: "ESTABLISHED", Inode: 9}}},
				Dirty:  []probes.DirtyCall{{ID: dirty, Stack: spinStack(true)}}})
		}
		if i == 4 {
			d.line(100, "CRITICAL", "WORKER TIMEOUT (pid:102)")
			d.line(102, "INFO", "Worker exiting (pid: 102)")
		}
		if i == 5 {
			d.st.probe(probes.Event{Kind: probes.EventVanish, ID: httpID, Time: d.now})
		}
		if i == 6 {
			d.line(110, "WARNING", "Execution timeout for dirty:Heavy.spin after 6s")
		}
		if i >= 7 {
			d.st.probe(probes.Event{Kind: probes.EventStack, ID: dirty, Time: d.now, Role: probes.RoleDirty,
				Deep: &probes.Deep{Time: d.now, Stack: spinStack(i < 12)}})
		}
	}
	d.step(5 * time.Second)
	rs := d.reports()
	h, ok := rs["102/timeout"]
	if !ok {
		t.Fatalf("no report for the HTTP worker: %v", rs)
	}
	dw := h.Incident.WaitingOnDirty
	if h.Verdict.Cause != postmortem.CauseBlocked || dw == nil || dw.PID != 110 || dw.Action != "dirty:Heavy.spin" || dw.Cause != postmortem.CauseCPUBound ||
		!strings.Contains(h.Verdict.Summary, "waiting on dirty worker 110 (`dirty:Heavy.spin`, cpu_bound for") {
		t.Errorf("HTTP worker: %s %+v\n%s", h.Verdict.Cause, dw, h.Verdict.Summary)
	}
	x, ok := rs["110/execution_timeout"]
	if !ok {
		t.Fatalf("no execution timeout report: %v", rs)
	}
	inc := x.Incident
	if x.Verdict.Cause != postmortem.CauseCPUBound || inc.Role != "dirty" || inc.Action != "dirty:Heavy.spin" || inc.StackTop == "" ||
		strings.Join(inc.DirtyApps, ",") != "dirty:Heavy" {
		t.Errorf("execution timeout: %s %+v", x.Verdict.Cause, inc)
	}
	// Reported once as still running (its postmortem event), then written again with its end.
	pm := d.events("postmortem")
	var running any
	for _, e := range pm {
		if k, _ := e.Get("kind"); k == "execution_timeout" {
			running, _ = e.Get("action_running")
		}
	}
	if running != true || len(pm) != 2 || len(d.rec.reports) != 3 {
		t.Errorf("action_running %v at the report; %d postmortem events, %d report writes", running, len(pm), len(d.rec.reports))
	}
	if inc.ActionRunning == nil || *inc.ActionRunning || inc.ActionEndedAt.IsZero() || inc.ActionSeconds < 11 || !strings.Contains(x.Verdict.Summary, "ran on in its thread") {
		t.Errorf("the rewritten report: %+v\n%s", inc, x.Verdict.Summary)
	}
	ends := d.events("worker.execution_end")
	if len(ends) != 1 {
		t.Fatalf("%d worker.execution_end events", len(ends))
	}
	if a, _ := ends[0].Get("action"); a != "dirty:Heavy.spin" {
		t.Errorf("end: %+v", ends[0])
	}
	if strings.Join(d.follows, ",") != "110 true,110 false" {
		t.Errorf("follows %v", d.follows)
	}
	// Nothing about the arbiter as an HTTP worker.
	for _, r := range d.rec.reports {
		if r.Incident.PID == 101 {
			t.Errorf("a report about the arbiter: %+v", r.Incident)
		}
	}
	for _, e := range d.rec.events {
		if p, _ := e.Get("pid"); p == 101 && e.Name != "dirty_arbiter.start" {
			t.Errorf("an event about the arbiter: %s %s", e.Name, e.Message)
		}
	}
}

// TestDirtyWorkerTimeout: a C loop holding the GIL stops the dirty worker's heartbeat; the
// arbiter's DIRTY WORKER TIMEOUT, believed because the heartbeat was stale against
// --dirty-timeout, then its SIGKILL: a post-mortem like an HTTP worker's, for a dirty worker.
func TestDirtyWorkerTimeout(t *testing.T) {
	d := newDirtySim(t, true)
	dirty := d.bootDirty(111)
	d.step(10 * time.Second)
	for i := 1; i <= 8; i++ {
		d.step(time.Second)
		d.sample(dirty, probes.RoleDirty, 99, "R", time.Duration(i)*time.Second)
	}
	d.line(101, "CRITICAL", "DIRTY WORKER TIMEOUT (pid:111)")
	d.step(time.Second)
	d.line(101, "WARNING", "Dirty worker (pid:111) killed by signal 9")
	d.line(101, "INFO", "Dirty worker exited (pid:111)")
	d.st.probe(probes.Event{Kind: probes.EventVanish, ID: dirty, Time: d.now, Role: probes.RoleDirty})
	d.step(5 * time.Second)
	r, ok := d.reports()["111/timeout"]
	if !ok {
		t.Fatalf("no report: %v", d.reports())
	}
	if r.Verdict.Cause != postmortem.CauseCPUBound || r.Incident.Role != "dirty" || !r.Incident.Escalated || r.Incident.HandledAbort ||
		!strings.Contains(r.Verdict.Summary, "--dirty-timeout") || !strings.Contains(r.Verdict.Summary, "the dirty arbiter SIGKILLed it") {
		t.Errorf("%s %+v\n%s", r.Verdict.Cause, r.Incident, r.Verdict.Summary)
	}
	to := d.events("worker.timeout")
	if len(to) != 1 {
		t.Fatalf("worker.timeout events %v", to)
	}
	if role, _ := to[0].Get("role"); role != "dirty" {
		t.Errorf("worker.timeout %+v", to[0])
	}
}

// TestDirtyLinesNotBelieved: a dirty line that does not come from the arbiter, or a DIRTY WORKER
// TIMEOUT about a dirty worker whose heartbeat is fresh, or an execution timeout from an HTTP
// worker, makes no incident; nor does an HTTP worker's kill line about a dirty worker.
func TestDirtyLinesNotBelieved(t *testing.T) {
	d := newDirtySim(t, true)
	dirty := d.bootDirty(110)
	for i := 0; i < 10; i++ {
		d.step(time.Second)
		d.sample(dirty, probes.RoleDirty, 1, "S", time.Duration(i%3)*time.Second)
		d.sample(httpID, probes.RoleHTTP, 1, "S", time.Duration(i%2)*time.Second)
	}
	d.line(102, "CRITICAL", "DIRTY WORKER TIMEOUT (pid:110)")           // from an HTTP worker
	d.line(101, "CRITICAL", "DIRTY WORKER TIMEOUT (pid:110)")           // its heartbeat is fresh
	d.line(101, "WARNING", "Dirty worker (pid:102) killed by signal 9") // about an HTTP worker
	d.line(102, "WARNING", "Execution timeout for dirty:Heavy.spin after 6s")
	d.line(100, "ERROR", "Worker (pid:110) was sent SIGKILL! Perhaps out of memory?") // the master about a dirty worker
	d.raw("DIRTY WORKER TIMEOUT (pid:110)")
	d.step(10 * time.Second)
	if len(d.rec.reports) != 0 {
		t.Errorf("reports from lines /proc does not back: %+v", d.rec.reports[0].Incident)
	}
	for _, name := range []string{"worker.timeout", "worker.killed", "worker.execution_timeout"} {
		if evs := d.events(name); len(evs) != 0 {
			t.Errorf("%s: %s", name, evs[0].Message)
		}
	}
}

// TestDirtyBootLoop: a dirty app whose init() fails makes the arbiter respawn its worker a
// hundred times a second. One boot_failure post-mortem, with the worker's traceback and the
// number of repeats; no record kept for the others; a dirty worker that then boots ends the loop.
func TestDirtyBootLoop(t *testing.T) {
	d := newDirtySim(t, false) // the settings did not say: the master's line turns dirty on
	if len(d.onDirty) != 1 || d.onDirty[0] != 6*time.Second {
		t.Fatalf("the watcher was not told: %v", d.onDirty)
	}
	pid := 200
	for s := 0; s < 4; s++ {
		for i := 0; i < 100; i++ {
			pid++
			d.line(101, "INFO", fmt.Sprintf("Spawned dirty worker (pid: %d) with apps: ['dirty:Heavy']", pid))
			d.line(pid, "ERROR", "Exception in dirty worker process")
			d.raw("Traceback (most recent call last):")
			d.raw(`  File "/srv/apps/dirty.py", line 22, in init`)
			d.raw("RuntimeError: the model file is missing")
			d.line(101, "ERROR", fmt.Sprintf("Dirty worker failed to boot (pid:%d)", pid))
			d.line(101, "INFO", fmt.Sprintf("Dirty worker exited (pid:%d)", pid))
		}
		if s == 1 { // the watcher caught one of them alive, then gone
			id := probes.ID{PID: pid - 50, StartTime: uint64(5000 + pid)}
			d.st.probe(probes.Event{Kind: probes.EventBoot, ID: id, Time: d.now, Role: probes.RoleDirty})
			d.st.probe(probes.Event{Kind: probes.EventVanish, ID: id, Time: d.now, Role: probes.RoleDirty})
		}
		d.step(time.Second)
	}
	d.step(10 * time.Second)
	if len(d.rec.reports) != 1 {
		t.Fatalf("%d reports, want one for the loop", len(d.rec.reports))
	}
	r := d.rec.reports[0]
	if r.Incident.Kind != postmortem.KindBootFailure || r.Incident.PID != 201 || r.Incident.Role != "dirty" || r.Incident.Repeats < 299 ||
		len(r.Incident.Traceback) != 3 || !strings.Contains(r.Verdict.Summary, "RuntimeError: the model file is missing") {
		t.Errorf("%+v\n%s", r.Incident, r.Verdict.Summary)
	}
	if n := len(d.st.w.byID); n > 10 || len(d.st.dirty.spawned) > maxSpawned {
		t.Errorf("%d records, %d spawn lines kept", n, len(d.st.dirty.spawned))
	}
	if n := len(d.events("worker.exit")); n != 1 {
		t.Errorf("%d worker.exit events", n)
	}
	// A worker boots (it heartbeats): the loop is over, the next failure is news.
	ok := d.bootDirty(900)
	d.sample(ok, probes.RoleDirty, 1, "S", time.Second)
	d.line(101, "INFO", "Spawned dirty worker (pid: 901) with apps: ['dirty:Heavy']")
	d.line(101, "ERROR", "Dirty worker failed to boot (pid:901)")
	d.step(10 * time.Second)
	if len(d.rec.reports) != 2 {
		t.Errorf("%d reports after the loop ended and another failed", len(d.rec.reports))
	}
}

// TestDirtyOOMAndArbiterDeath: a dirty worker allocating past the limit is OOM-killed; then the
// arbiter is SIGKILLed: its death is its own kind, and names the dirty worker still running.
func TestDirtyOOMAndArbiterDeath(t *testing.T) {
	d := newDirtySim(t, true)
	a := d.bootDirty(120)
	b := d.bootDirty(121)
	d.step(5 * time.Second)
	d.sample(a, probes.RoleDirty, 80, "R", time.Second)
	d.oomTotal = 1
	d.st.probe(probes.Event{Kind: probes.EventVanish, ID: a, Time: d.now, Role: probes.RoleDirty})
	d.st.oom(oomIn{ev: memwatch.OOMEvent{Time: d.now, Count: 1, Total: 1}}, d.now)
	d.line(101, "WARNING", "Dirty worker (pid:120) killed by signal 9")
	d.step(5 * time.Second)
	d.line(100, "WARNING", "Dirty arbiter (pid:101) killed by signal 9")
	d.st.probe(probes.Event{Kind: probes.EventArbiterGone, ID: arbiterID, Time: d.now})
	d.sample(b, probes.RoleDirty, 1, "S", time.Second)
	d.step(5 * time.Second)
	rs := d.reports()
	if r, ok := rs["120/oom_kill"]; !ok || r.Verdict.Cause != postmortem.CauseOOMKilled || r.Incident.Role != "dirty" {
		t.Errorf("OOM: %v", rs)
	}
	r, ok := rs["101/dirty_arbiter_exit"]
	if !ok || r.Verdict.Cause != postmortem.CauseCrashed || r.Incident.Role != "dirty_arbiter" || fmt.Sprint(r.Incident.Orphans) != "[121]" {
		t.Fatalf("arbiter: %v", rs)
	}
	if !strings.Contains(r.Verdict.Summary, "The dirty arbiter 101 was SIGKILLed") || !strings.Contains(r.Verdict.Summary, "121 are still running") {
		t.Errorf("%s", r.Verdict.Summary)
	}
	if len(rs) != 2 {
		t.Errorf("reports %v", rs)
	}
}

// TestDirtyOOMNamedAtOnce: a dirty worker the OOM killer kills while an HTTP worker was
// SIGKILLed from outside just before: /proc read right after the move shows the dirty worker,
// among the arbiter's children, dying of SIGKILL, so oom.kill names it at once; the HTTP worker,
// dead before the counter's last unmoved read, is a crash of its own.
func TestDirtyOOMNamedAtOnce(t *testing.T) {
	d := newDirtySim(t, true)
	a := d.bootDirty(120)
	d.step(5 * time.Second)
	d.sample(httpID, probes.RoleHTTP, 1, "S", time.Second)
	d.sample(a, probes.RoleDirty, 80, "R", time.Second)
	d.st.probe(probes.Event{Kind: probes.EventVanish, ID: httpID, Time: d.now})
	d.line(100, "WARNING", "Worker with pid 102 was terminated due to signal 9")
	d.now = d.now.Add(400 * time.Millisecond)
	d.oomTotal = 1
	dying := []probes.Fate{{ID: arbiterID, PPID: 100, State: "S", StatusKnown: true},
		{ID: a, PPID: 101, State: "R", KillPending: true, StatusKnown: true}}
	seen := d.now.Add(time.Millisecond)
	d.st.oom(oomIn{ev: memwatch.OOMEvent{Time: d.now, After: d.now.Add(-5 * time.Millisecond), Count: 1, Total: 1},
		fates: dying, seen: true, seenAt: seen}, seen)
	if ev := d.events("oom.kill"); len(ev) != 1 {
		t.Errorf("%d oom.kill events", len(ev))
	} else if pids, _ := ev[0].Get("pids"); fmt.Sprint(pids) != "[120]" {
		t.Errorf("oom.kill names %v, want [120] at once", pids)
	}
	d.st.probe(probes.Event{Kind: probes.EventVanish, ID: a, Time: d.now.Add(10 * time.Millisecond), Role: probes.RoleDirty})
	d.line(101, "WARNING", "Dirty worker (pid:120) killed by signal 9")
	d.step(5 * time.Second)
	rs := d.reports()
	if r, ok := rs["120/oom_kill"]; !ok || r.Verdict.Cause != postmortem.CauseOOMKilled || r.Incident.Role != "dirty" {
		t.Errorf("dirty worker: %v", rs)
	}
	if r, ok := rs["102/signal"]; !ok || r.Verdict.Cause != postmortem.CauseCrashed || r.Incident.OOMKillDelta != 0 {
		t.Errorf("HTTP worker: %v", rs)
	}
	if len(rs) != 2 {
		t.Errorf("reports %v", rs)
	}
}

// TestDirtyStopIsQuiet: at a stop, the dirty workers and the arbiter end with the master: no
// incident.
func TestDirtyStopIsQuiet(t *testing.T) {
	d := newDirtySim(t, true)
	w := d.bootDirty(130)
	d.step(5 * time.Second)
	d.line(100, "INFO", "Handling signal: term")
	d.line(130, "INFO", "Dirty worker 130 exiting")
	d.line(101, "INFO", "Dirty worker exited (pid:130)")
	d.st.probe(probes.Event{Kind: probes.EventVanish, ID: w, Time: d.now, Role: probes.RoleDirty})
	d.line(100, "INFO", "Dirty arbiter (pid:101) exited")
	d.st.probe(probes.Event{Kind: probes.EventArbiterGone, ID: arbiterID, Time: d.now})
	d.step(5 * time.Second)
	d.st.flush(d.now)
	if len(d.rec.reports) != 0 {
		t.Errorf("a stop made %d reports: %+v", len(d.rec.reports), d.rec.reports[0].Incident)
	}
}

// TestDirtyTimeoutUnknownSetting: when --dirty-timeout could not be read (a config file gwrap
// could not evaluate), the heartbeat cannot be judged against it: the arbiter's DIRTY WORKER
// TIMEOUT about a dirty worker gwrap knows is taken on its word.
func TestDirtyTimeoutUnknownSetting(t *testing.T) {
	d := newDirtySim(t, true)
	d.st.settings.DirtyTimeout = 300 // Gunicorn's default, assumed; the app set 6
	d.st.settings.Sources = map[string]gunicorn.Source{"dirty_timeout": gunicorn.SourceUnknown}
	dirty := d.bootDirty(140)
	for i := 1; i <= 8; i++ {
		d.step(time.Second)
		d.sample(dirty, probes.RoleDirty, 99, "R", time.Duration(i)*time.Second)
	}
	d.line(101, "CRITICAL", "DIRTY WORKER TIMEOUT (pid:140)")
	d.step(time.Second)
	d.line(101, "WARNING", "Dirty worker (pid:140) killed by signal 9")
	d.st.probe(probes.Event{Kind: probes.EventVanish, ID: dirty, Time: d.now, Role: probes.RoleDirty})
	d.step(5 * time.Second)
	if r, ok := d.reports()["140/timeout"]; !ok || !r.Incident.Escalated {
		t.Errorf("reports %v", d.reports())
	}
}

// TestExecQueuedBehind: with one dirty thread, a call that comes while another action still
// runs waits behind it, and Gunicorn's timeout counts the wait: the second execution timeout says
// how long it waited and behind what, and what it did is judged on its own run only (a sleep,
// not the loop before it).
func TestExecQueuedBehind(t *testing.T) {
	d := newDirtySim(t, true)
	w := d.bootDirty(150)
	d.step(10 * time.Second)
	stack := func(action string) *probes.PyStack {
		st := &probes.PyStack{Frames: []string{"thread 0x1", "  /srv/apps/dirty.py:28 in " + action}, Top: "apps/dirty.py:28 in " + action}
		if action != "" {
			st.DirtyRunning, st.DirtyAction = true, action
		}
		return st
	}
	for i := 1; i <= 20; i++ {
		d.step(time.Second)
		cpu, action := 99.0, "spin" // spin from 1 to 12, then sleep from 12 to 18
		if i > 12 {
			cpu, action = 0, "sleep"
		}
		if i > 18 {
			action = ""
		}
		d.sample(w, probes.RoleDirty, cpu, "S", time.Duration(i%3)*time.Second)
		if i == 6 {
			d.line(150, "WARNING", "Execution timeout for dirty:Heavy.spin after 6s") // spin called at 0, seen ended at 13
		}
		if i == 14 {
			d.line(150, "WARNING", "Execution timeout for dirty:Heavy.sleep after 6s") // sleep called at 8, behind the spin
		}
		if i >= 7 {
			d.st.probe(probes.Event{Kind: probes.EventStack, ID: w, Time: d.now, Role: probes.RoleDirty,
				Deep: &probes.Deep{Time: d.now, Wchan: "hrtimer_nanosleep", Stack: stack(action)}})
		}
	}
	d.step(5 * time.Second)
	r, ok := d.reports()["150/execution_timeout"] // the last written: the sleep's
	inc := r.Incident
	if !ok || inc.Action != "dirty:Heavy.sleep" || inc.ActionQueuedBehind != "dirty:Heavy.spin" || inc.ActionQueuedSeconds != 5 { // called at 8, ran from 13
		t.Fatalf("%+v", inc)
	}
	if r.Verdict.Cause != postmortem.CauseBlocked || inc.ActionSeconds < 5.5 || inc.ActionSeconds > 7.5 ||
		!strings.Contains(r.Verdict.Summary, "behind `dirty:Heavy.spin`") {
		t.Errorf("%s, ran %v s: %s", r.Verdict.Cause, inc.ActionSeconds, r.Verdict.Summary)
	}
}

// TestExecBounded: actions that never end, called again and again, keep a bounded number of
// execution timeouts followed.
func TestExecBounded(t *testing.T) {
	d := newDirtySim(t, true)
	w := d.bootDirty(160)
	d.step(10 * time.Second)
	for i := 0; i < 3*maxExecs; i++ {
		d.step(time.Second)
		d.line(160, "WARNING", "Execution timeout for dirty:Heavy.wait after 6s")
		d.st.probe(probes.Event{Kind: probes.EventStack, ID: w, Time: d.now, Role: probes.RoleDirty,
			Deep: &probes.Deep{Time: d.now, Stack: &probes.PyStack{Frames: []string{"x"}, DirtyRunning: true, DirtyAction: "wait"}}})
	}
	d.step(5 * time.Second)
	if n := len(d.st.dirty.execs); n > maxExecs {
		t.Errorf("%d execution timeouts kept", n)
	}
	if n := len(d.events("postmortem")); n != 3*maxExecs {
		t.Errorf("%d reported, want every one", n)
	}
}
