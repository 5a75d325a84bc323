package engine

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// world drives the engine's state as gwrap's producers do, over a fake /proc: the relay's lines,
// the watcher's sweeps, the OOM watcher's moves, and a tick after each.
type world struct {
	st   *state
	rec  *recorder
	proc *fakeProc
	ooms uint64 // the cgroup's oom_kill counter
	// ws is the container's working set at a sweep (nil: 120 MiB throughout).
	ws func(t time.Time) uint64
}

const master = 100

func newWorld(s gunicorn.Settings) *world {
	st, rec := testState(s)
	w := &world{st: st, rec: rec, proc: newFakeProc(master)}
	w.proc.install(st)
	st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: master}, Time: t0})
	return w
}

func id(pid int) probes.ID { return probes.ID{PID: pid, StartTime: uint64(pid) * 7} }

// at is t0 plus seconds.
func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

// line relays one line of Gunicorn's stderr, with the default prefix of pid.
func (w *world) line(t time.Time, pid int, level, msg string) {
	w.st.line("stderr", []byte(fmt.Sprintf("[2026-11-25 06:00:00 +0000] [%d] [%s] %s", pid, level, msg)), t)
	w.st.tick(t)
}

// fork makes a new worker: in /proc, its boot line, and the watcher's first sight of it.
func (w *world) fork(pid int, t time.Time) {
	w.proc.child(id(pid))
	w.line(t, pid, "INFO", fmt.Sprintf("Booting worker with pid: %d", pid))
	w.st.probe(probes.Event{Kind: probes.EventBoot, ID: id(pid), Time: t})
}

// sweep is the watcher's sample of a live worker, silent for hb, holding rss, with the
// container's (a 256 MiB limit, its oom_kill counter readable).
func (w *world) sweep(pid int, t time.Time, hb time.Duration, rss uint64) {
	ws := uint64(120 << 20)
	if w.ws != nil {
		ws = w.ws(t)
	}
	w.st.containerSample(memwatch.Stats{Time: t, Version: 1, Usage: memwatch.Value{V: ws + 30<<20, Known: true},
		WorkingSet: memwatch.Value{V: ws, Known: true}, Limit: memwatch.Value{V: 256 << 20, Known: true},
		OOMKill: memwatch.Value{V: w.ooms, Known: true}})
	w.st.probe(w.proc.sample(id(pid), t, hb, rss))
	w.st.tick(t)
}

// healthy samples a worker once a second over [from, to], beating every 2 s.
func (w *world) healthy(pid int, from, to time.Time) {
	for t := from; !t.After(to); t = t.Add(time.Second) {
		w.sweep(pid, t, t.Sub(from)%(2*time.Second), 40<<20)
	}
}

// silent samples a worker once a second over [from, to], silent since from.
func (w *world) silent(pid int, from, to time.Time) {
	for t := from; !t.After(to); t = t.Add(time.Second) {
		w.sweep(pid, t, t.Sub(from), 40<<20)
	}
}

func (w *world) vanish(pid int, t time.Time) {
	w.st.probe(probes.Event{Kind: probes.EventVanish, ID: id(pid), Time: t})
	w.st.tick(t)
}

// oom is a move of the counter by count at t, last seen unmoved lag before.
func (w *world) oom(t time.Time, lag time.Duration, count uint64) {
	w.ooms += count
	w.proc.moved(w.st, t, lag, count)
	w.st.tick(t)
}

// end lets every window close, then stops.
func (w *world) end(t time.Time) {
	w.st.tick(t.Add(time.Minute))
	w.st.flush(t.Add(2 * time.Minute))
}

func (w *world) verdicts() string {
	var out []string
	for _, r := range w.rec.reports {
		out = append(out, fmt.Sprintf("%d %s", r.Incident.PID, r.Verdict.Cause))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

func (w *world) report(pid int) (postmortem.Report, bool) {
	for _, r := range w.rec.reports {
		if r.Incident.PID == pid {
			return r, true
		}
	}
	return postmortem.Report{}, false
}

var gunicorn201 = gunicorn.Settings{Timeout: 4, GracefulTimeout: 2, Workers: 1, WorkerClass: "sync", LogLevel: "info"}

// TestOverlappingDeathsEachGetTheirOwnVerdict: deaths close together, one an OOM kill, each get
// their own verdict. The OOM kill goes to the worker /proc showed dying of SIGKILL right after
// the counter moved, or whose death fits the move; a death explained otherwise (a handled abort,
// a recycle, an exit code) never takes it; and when the evidence cannot tell two apart, both
// reports say so. Each case runs 20 times: the victim once depended on a map's order.
func TestOverlappingDeathsEachGetTheirOwnVerdict(t *testing.T) {
	for _, c := range []struct {
		name     string
		settings gunicorn.Settings
		run      func(w *world)
		want     string
		check    func(t *testing.T, w *world)
	}{
		{name: "a timeout, then within 2 s an OOM kill of the replacement", settings: gunicorn201, run: func(w *world) {
			w.fork(101, at(0))
			w.healthy(101, at(0), at(2))
			w.silent(101, at(2), at(6)) // a request sleeping past the 4 s timeout
			w.line(at(6.2), master, "CRITICAL", "WORKER TIMEOUT (pid:101)")
			w.line(at(6.21), 101, "INFO", "Worker exiting (pid: 101)")
			w.proc.exit(101, 1<<8)
			w.proc.reap(101)
			w.fork(102, at(6.25))
			w.vanish(101, at(6.3))
			w.sweep(102, at(7), 0, 30<<20)
			w.proc.kill(102) // the replacement allocates past the limit
			w.oom(at(7.5), 3*time.Millisecond, 1)
			w.proc.reap(102)
			w.line(at(7.53), master, "WARNING", "Worker with pid 102 was terminated due to signal 9")
			w.fork(103, at(7.56))
			w.vanish(102, at(8))
			w.end(at(8))
		}, want: "101 blocked, 102 oom_killed", check: func(t *testing.T, w *world) {
			if r, _ := w.report(101); r.Incident.OOMKillDelta != 0 {
				t.Errorf("the timed-out worker was credited the OOM kill: oom_kill_delta %d", r.Incident.OOMKillDelta)
			}
			if pids, _ := w.rec.named("oom.kill")[0].Get("pids"); fmt.Sprint(pids) != "[102]" {
				t.Errorf("oom.kill names %v, want [102]", pids)
			}
		}},
		{name: "a max-requests recycle, then an OOM kill of the replacement", settings: gunicorn201, run: func(w *world) {
			w.fork(101, at(0))
			w.healthy(101, at(0), at(5))
			w.line(at(5.1), 101, "INFO", "Autorestarting worker after current request.")
			w.line(at(5.11), 101, "INFO", "Worker exiting (pid: 101)")
			w.proc.exit(101, 0)
			w.proc.reap(101)
			w.fork(102, at(5.15))
			w.vanish(101, at(5.3))
			w.sweep(102, at(6), 0, 30<<20)
			w.proc.kill(102)
			w.oom(at(6.4), 3*time.Millisecond, 1)
			w.proc.reap(102)
			w.line(at(6.41), master, "WARNING", "Worker with pid 102 was terminated due to signal 9")
			w.vanish(102, at(7))
			w.end(at(7))
		}, want: "102 oom_killed"},
		{name: "two workers OOM-killed within a second", settings: gunicorn201, run: func(w *world) {
			w.fork(101, at(0))
			w.fork(102, at(0))
			w.healthy(101, at(0), at(9))
			w.healthy(102, at(0), at(9))
			w.proc.kill(101)
			w.oom(at(9.5), 3*time.Millisecond, 1)
			w.proc.reap(101)
			w.line(at(9.51), master, "WARNING", "Worker with pid 101 was terminated due to signal 9")
			w.fork(103, at(9.55))
			w.proc.kill(102)
			w.oom(at(10.1), 3*time.Millisecond, 1)
			w.proc.reap(102)
			w.line(at(10.11), master, "WARNING", "Worker with pid 102 was terminated due to signal 9")
			w.vanish(101, at(10.5))
			w.vanish(102, at(10.5))
			w.end(at(11))
		}, want: "101 oom_killed, 102 oom_killed"},
		{name: "an outside SIGKILL of one worker while another is OOM-killed", settings: gunicorn201, run: func(w *world) {
			w.fork(101, at(0))
			w.fork(102, at(0))
			w.healthy(101, at(0), at(9))
			w.healthy(102, at(0), at(9))
			w.proc.kill(101) // kill -9 from outside
			w.proc.reap(101)
			w.line(at(9.5), master, "WARNING", "Worker with pid 101 was terminated due to signal 9")
			w.fork(103, at(9.55))
			w.proc.kill(102)
			w.oom(at(9.9), 3*time.Millisecond, 1)
			w.proc.reap(102)
			w.line(at(9.91), master, "WARNING", "Worker with pid 102 was terminated due to signal 9")
			w.vanish(101, at(10))
			w.vanish(102, at(10))
			w.end(at(10))
		}, want: "101 crashed, 102 oom_killed"},
		{name: "…when only the poll saw the move and the outside kill came a second before it", settings: gunicorn201, run: func(w *world) {
			w.fork(101, at(0))
			w.fork(102, at(0))
			w.healthy(101, at(0), at(8))
			w.healthy(102, at(0), at(8))
			w.proc.kill(101)
			w.proc.reap(101)
			w.line(at(8.2), master, "WARNING", "Worker with pid 101 was terminated due to signal 9")
			w.proc.kill(102)
			w.proc.reap(102)
			w.line(at(9.5), master, "WARNING", "Worker with pid 102 was terminated due to signal 9")
			w.oom(at(9.7), time.Second, 1) // read unmoved at 8.7: 101 was gone by then
			w.vanish(101, at(10))
			w.vanish(102, at(10))
			w.end(at(10))
		}, want: "101 crashed, 102 oom_killed"},
		{name: "…when the victim was reaped before /proc was read", settings: gunicorn201, run: func(w *world) {
			w.fork(101, at(0))
			w.fork(102, at(0))
			w.healthy(101, at(0), at(9))
			w.healthy(102, at(0), at(9))
			w.proc.kill(101)
			w.proc.reap(101)
			w.line(at(9.45), master, "WARNING", "Worker with pid 101 was terminated due to signal 9")
			w.proc.kill(102)
			w.proc.reap(102) // gwrap took the notification late: the victim is reaped already
			w.ooms++
			w.proc.notified(w.st, at(10), at(8), at(9.99), 1) // the read before was 2 s earlier
			w.line(at(10.01), master, "WARNING", "Worker with pid 102 was terminated due to signal 9")
			w.vanish(101, at(10.5))
			w.vanish(102, at(10.5))
			w.end(at(11))
		}, want: "101 crashed, 102 oom_killed"},
		{name: "an exit with a code is never the OOM victim", settings: gunicorn.Settings{Timeout: 30, Workers: 2, WorkerClass: "sync", LogLevel: "warning"}, run: func(w *world) {
			w.fork(101, at(0))
			w.fork(102, at(0))
			w.healthy(101, at(0), at(9))
			w.healthy(102, at(0), at(9))
			w.proc.exit(101, 1<<8)
			w.proc.reap(101)
			w.line(at(9.3), master, "ERROR", "Worker (pid:101) exited with code 1")
			w.proc.kill(102)
			w.proc.reap(102)
			w.line(at(9.5), master, "ERROR", "Worker (pid:102) was sent SIGKILL! Perhaps out of memory?")
			w.oom(at(9.8), time.Second, 1) // polled: both deaths fit the move in time
			w.vanish(101, at(10))
			w.vanish(102, at(10))
			w.end(at(10))
		}, want: "101 crashed, 102 oom_killed", check: func(t *testing.T, w *world) {
			if r, _ := w.report(101); r.Incident.OOMKillDelta != 0 || r.Incident.Kind != postmortem.KindExit {
				t.Errorf("101: %+v", r.Incident)
			}
		}},
		{name: "a worker /proc showed dying of its exit code is never the OOM victim", settings: gunicorn201, run: func(w *world) {
			w.fork(101, at(0))
			w.fork(102, at(0))
			w.healthy(101, at(0), at(9))
			w.healthy(102, at(0), at(9))
			w.proc.exit(101, 7<<8) // a zombie as the counter moves: os._exit(7)
			w.proc.kill(102)
			w.proc.reap(102) // reaped before /proc was read
			w.oom(at(9.5), 3*time.Millisecond, 1)
			w.proc.reap(101)
			w.vanish(101, at(10))
			w.vanish(102, at(10))
			w.end(at(10))
		}, want: "101 crashed, 102 oom_killed"},
		{name: "two SIGKILLs within one poll of the counter cannot be told apart", settings: gunicorn201, run: func(w *world) {
			w.fork(101, at(0))
			w.fork(102, at(0))
			w.healthy(101, at(0), at(9))
			w.healthy(102, at(0), at(9))
			w.proc.kill(101)
			w.proc.reap(101)
			w.line(at(9.2), master, "WARNING", "Worker with pid 101 was terminated due to signal 9")
			w.proc.kill(102)
			w.proc.reap(102)
			w.line(at(9.6), master, "WARNING", "Worker with pid 102 was terminated due to signal 9")
			w.oom(at(9.8), time.Second, 1)
			w.vanish(101, at(10))
			w.vanish(102, at(10))
			w.end(at(10))
		}, want: "101 unknown, 102 unknown", check: func(t *testing.T, w *world) {
			for _, pair := range [][2]int{{101, 102}, {102, 101}} {
				r, _ := w.report(pair[0])
				other := fmt.Sprint(pair[1])
				if r.Verdict.Confidence != "low" || fmt.Sprint(r.Incident.OOMShared) != "["+other+"]" ||
					!strings.Contains(r.Verdict.Summary, "worker "+other) || !strings.Contains(r.Verdict.Summary, "cannot tell which") {
					t.Errorf("%d: confidence %s, shared with %v: %s", pair[0], r.Verdict.Confidence, r.Incident.OOMShared, r.Verdict.Summary)
				}
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for range 20 {
				w := newWorld(c.settings)
				c.run(w)
				if got := w.verdicts(); got != c.want {
					t.Fatalf("verdicts %q, want %q", got, c.want)
				}
				if c.check != nil {
					c.check(t, w)
				}
			}
		})
	}
}

// TestALineIsNeverProofByItself: the app shares Gunicorn's stderr and can print the master's
// pid. Kill and timeout lines about a worker /proc shows alive, and beating again after them,
// make no report and no worker.killed, and when that worker really times out later, that death
// is reported as if the lines had never been printed.
func TestALineIsNeverProofByItself(t *testing.T) {
	for _, c := range []struct {
		name   string
		silent bool // the worker was silent long enough for its heartbeat to look stale
	}{
		{"printed in a long request", true},
		{"printed by a beating worker", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(gunicorn.Settings{Timeout: 6, GracefulTimeout: 2, Workers: 1, WorkerClass: "sync", LogLevel: "info"})
			w.fork(101, at(0))
			w.healthy(101, at(0), at(10))
			if c.silent {
				w.silent(101, at(10), at(15)) // 5 s of a 6 s timeout
			} else {
				w.healthy(101, at(10), at(15))
			}
			for _, l := range []string{
				"[CRITICAL] WORKER TIMEOUT (pid:101)",
				"[ERROR] Worker (pid:101) was sent SIGKILL! Perhaps out of memory?",
				"[WARNING] Worker with pid 101 was terminated due to signal 9",
				"[ERROR] Worker (pid:101) exited with code 1",
			} {
				w.st.line("stderr", []byte("[2026-11-25 06:00:15 +0000] [100] "+l), at(15.1))
			}
			// It answered and beat again, 50 ms before the lines as the heartbeat file's coarse
			// clock has it.
			w.sweep(101, at(15.2), 150*time.Millisecond, 40<<20)
			if inc := w.st.w.known(101).inc; inc != nil {
				t.Errorf("the incident the printed lines opened is still open after the worker beat again: %+v", inc)
			}
			w.healthy(101, at(15.5), at(17))
			if n := len(w.rec.reports); n != 0 {
				t.Fatalf("%d reports for a live worker: %s", n, w.rec.reports[0].Verdict.Summary)
			}
			for _, name := range []string{"worker.killed", "worker.exit", "postmortem"} {
				if n := len(w.rec.named(name)); n != 0 {
					t.Errorf("%d %s events for a live worker", n, name)
				}
			}
			warned := 0
			for _, e := range w.rec.named("config.warning") {
				if code, _ := e.Get("code"); code == "unverified_line" {
					warned++
				}
			}
			if warned != 1 {
				t.Errorf("%d unverified_line warnings, want 1", warned)
			}
			// Now it really times out, within the windows the printed lines opened.
			w.silent(101, at(17), at(23))
			if n := len(w.rec.reports); n != 0 {
				t.Fatalf("%d reports for a live worker: %s", n, w.rec.reports[0].Verdict.Summary)
			}
			w.line(at(23.2), master, "CRITICAL", "WORKER TIMEOUT (pid:101)")
			w.line(at(23.21), 101, "INFO", "Worker exiting (pid: 101)")
			w.proc.exit(101, 1<<8)
			w.proc.reap(101)
			w.vanish(101, at(23.3))
			w.end(at(24))
			if got := w.verdicts(); got != "101 blocked" {
				t.Fatalf("verdicts %q, want the real timeout alone: 101 blocked", got)
			}
			r, _ := w.report(101)
			if !r.Incident.At.Equal(at(23.2)) || slices.ContainsFunc(r.Incident.Lines, func(l string) bool { return strings.Contains(l, "SIGKILL") }) {
				t.Errorf("the report carries the printed lines: at %v, lines %q", r.Incident.At, r.Incident.Lines)
			}
		})
	}
}

// TestBootLinesMakeRecordsOnlyForChildren: 100,000 "Booting worker with pid: N" lines the app
// prints leave no record; a boot line of a real child of the master does.
func TestBootLinesMakeRecordsOnlyForChildren(t *testing.T) {
	w := newWorld(gunicorn201)
	w.proc.other(probes.ID{PID: 5000, StartTime: 3}) // a process, but not the master's child
	for n := 1000; n < 101000; n++ {
		w.st.line("stdout", []byte(fmt.Sprintf("[2026-11-25 06:00:00 +0000] [%d] [INFO] Booting worker with pid: %d", n, n)), at(1))
	}
	for n := 6000; n < 8000; n++ { // live processes, none the master's child
		w.proc.other(probes.ID{PID: n, StartTime: 3})
		w.st.line("stdout", []byte(fmt.Sprintf("[2026-11-25 06:00:00 +0000] [%d] [INFO] Booting worker with pid: %d", n, n)), at(1))
	}
	if n := len(w.st.w.byID) + len(w.st.w.byPID); n != 0 {
		t.Fatalf("%d records from printed boot lines", n)
	}
	if n := len(w.st.bootSeen); n > bootLines {
		t.Fatalf("%d boot lines remembered, want at most %d", n, bootLines)
	}
	w.proc.child(id(201)) // a worker that fails before the watcher's first sweep
	w.line(at(2), 201, "INFO", "Booting worker with pid: 201")
	if r := w.st.w.known(201); r == nil || r.id != id(201) {
		t.Fatalf("no record (or the wrong one) for a real worker's boot line: %+v", r)
	}
}

// TestABootLineSaysTheWorkersLinesReachGwrap: a worker that vanishes without a line is a crash
// only when its own boot line reached gwrap (its exit would have been said too), however the boot
// line and the watcher's first sight of it are ordered, whether the master was found yet (a shell
// in front of Gunicorn), and for a USR2 upgrade's new master's workers; a boot line /proc does
// not back (a pid no master's child) counts for nothing.
func TestABootLineSaysTheWorkersLinesReachGwrap(t *testing.T) {
	const shell, newMaster = 50, 300
	boot := func(w *world, pid int, t time.Time) {
		w.line(t, pid, "INFO", fmt.Sprintf("Booting worker with pid: %d", pid))
	}
	sight := func(w *world, pid, m int, t time.Time) {
		w.st.probe(probes.Event{Kind: probes.EventBoot, ID: id(pid), Master: m, Time: t})
	}
	for _, c := range []struct {
		name  string
		pid   int
		start func(w *world) // the worker forks at 1 s, the watcher sees it, its boot line comes
		want  string
	}{
		{"the line before the watcher's sight", 201, func(w *world) {
			w.st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: master}, Time: t0})
			w.proc.child(id(201))
			boot(w, 201, at(1))
			sight(w, 201, master, at(1.5))
		}, "201 crashed"},
		{"the line after the watcher's sight", 201, func(w *world) {
			w.st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: master}, Time: t0})
			w.proc.child(id(201))
			sight(w, 201, master, at(1))
			boot(w, 201, at(1.5))
		}, "201 crashed"},
		{"the line before the master is found (a shell in front)", 201, func(w *world) {
			w.proc.child(id(201))
			boot(w, 201, at(1))
			w.st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: master}, Time: at(1.5)})
			sight(w, 201, master, at(1.5))
		}, "201 crashed"},
		{"a USR2 upgrade's new master's worker", 301, func(w *world) {
			w.st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: master}, Time: t0})
			w.st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: newMaster}, Parent: master, Time: t0})
			w.proc.procs[301] = probes.Fate{ID: id(301), PPID: newMaster, State: "S", StatusKnown: true}
			boot(w, 301, at(1))
			sight(w, 301, newMaster, at(1.5))
		}, "301 crashed"},
		{"no boot line", 201, func(w *world) {
			w.st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: master}, Time: t0})
			w.proc.child(id(201))
			sight(w, 201, master, at(1))
		}, ""},
		{"a boot line for a pid no master's child, reused by a worker long after", 201, func(w *world) {
			w.st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: master}, Time: t0})
			w.proc.other(id(201))
			boot(w, 201, at(1))
			w.proc.child(probes.ID{PID: 201, StartTime: 5}) // the pid, reused by a real worker
			w.st.probe(probes.Event{Kind: probes.EventBoot, ID: probes.ID{PID: 201, StartTime: 5}, Master: master, Time: at(40)})
		}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, rec := testState(gunicorn201)
			w := &world{st: st, rec: rec, proc: newFakeProc(master)}
			w.proc.install(st)
			st.root = shell
			c.start(w)
			wid := id(c.pid)
			if r := st.w.known(c.pid); r != nil {
				wid = r.id
			}
			from := 2.0
			if wid.StartTime == 5 {
				from = 41
			}
			for s := from; s <= 50; s++ {
				st.containerSample(memwatch.Stats{Time: at(s), Version: 1, OOMKill: memwatch.Value{V: 0, Known: true}})
				st.probe(w.proc.sample(wid, at(s), time.Duration(s)%2*time.Second, 40<<20))
				st.tick(at(s))
			}
			w.proc.reap(c.pid)
			st.probe(probes.Event{Kind: probes.EventVanish, ID: wid, Time: at(51)})
			w.end(at(51))
			if got := w.verdicts(); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

// TestOOMReadsTheChildrenOfEveryParent: the moment the counter moves, Engine.OOM reads the
// children of the command until a master is found, then of every master found (a USR2 upgrade's
// new one while both serve) and of the dirty arbiter (whose children are the dirty workers), and
// no longer of one that is gone.
func TestOOMReadsTheChildrenOfEveryParent(t *testing.T) {
	var asked [][]int
	var round []int
	rec := &recorder{}
	e := New(Config{Settings: gunicorn201, Reports: rec, Fates: func(pid int) ([]probes.Fate, error) {
		round = append(round, pid)
		return nil, nil
	}}, rec)
	oom := func() {
		round = nil
		e.OOM(memwatch.OOMEvent{Time: t0, Count: 1})
		sort.Ints(round)
		asked = append(asked, round)
	}
	e.Started(50)
	oom()
	e.Probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 100}})
	oom()
	e.Probe(probes.Event{Kind: probes.EventArbiter, ID: probes.ID{PID: 101}})
	e.Probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: 300}, Parent: 100})
	oom()
	e.Sweep(nil, []probes.Event{{Kind: probes.EventMasterGone, ID: probes.ID{PID: 100}}, {Kind: probes.EventArbiterGone, ID: probes.ID{PID: 101}}})
	oom()
	if got, want := fmt.Sprint(asked), "[[50] [100] [100 101 300] [300]]"; got != want {
		t.Errorf("children read of %s, want %s", got, want)
	}
}

// TestLinesQueuedAreBoundedInBytes: a producer faster than the engine waits once the lines
// queued hold inBytes, not only once inBuffer lines are queued.
func TestLinesQueuedAreBoundedInBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		e := New(Config{Settings: gunicorn201, Reports: rec, Interval: time.Hour}, rec)
		line := []byte(strings.Repeat("x", 64<<10))
		var sent atomic.Int64
		go func() {
			for range 1000 { // 64 MiB
				e.Line("stdout", line)
				sent.Add(1)
			}
		}()
		synctest.Wait() // the producer waits: the engine is not running
		queued := 0
		for len(e.in) > 0 {
			in := <-e.in
			queued += len(in.line.line)
		}
		if n := int(sent.Load()); queued > 4<<20+len(line) || n*len(line) != queued {
			t.Errorf("%d lines (%d KiB) queued for the engine, want at most %d KiB", n, queued>>10, 4<<10+64)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		e.Run(ctx) // ends the producer's wait
		synctest.Wait()
	})
}

// TestTimeoutLineWhileSamplingLags: gwrap shares the container's CPU quota with the workers, and
// when a spinning worker starves it, its samples stop while the worker goes silent. The master's
// WORKER TIMEOUT then meets samples that predate the silence: the line waits for the next sample,
// which alone says whether the heartbeat was stale when the line was written.
func TestTimeoutLineWhileSamplingLags(t *testing.T) {
	for _, c := range []struct {
		name   string
		age    time.Duration // the heartbeat age in the first sample after the line, 0.2 s after it
		silent bool
	}{
		{"the worker had gone silent", 3400 * time.Millisecond, true},
		{"the worker beat just before the line", 300 * time.Millisecond, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(gunicorn.Settings{Timeout: 4, GracefulTimeout: 2, Workers: 1, WorkerClass: "sync", LogLevel: "info"})
			w.fork(101, at(0))
			w.healthy(101, at(0), at(5))
			// No sample from 5 s to 9.2 s: gwrap was starved.
			w.line(at(9), master, "CRITICAL", "WORKER TIMEOUT (pid:101)")
			if n := len(w.rec.named("worker.timeout")); n != 0 {
				t.Fatalf("worker.timeout taken on samples 4 s old")
			}
			w.sweep(101, at(9.2), c.age, 40<<20)
			timeouts := len(w.rec.named("worker.timeout"))
			if !c.silent {
				if timeouts != 0 {
					t.Fatalf("worker.timeout for a worker that beat 0.1 s before the line")
				}
				w.healthy(101, at(10), at(12))
				w.end(at(12))
				if got := w.verdicts(); got != "" {
					t.Errorf("verdicts %q for a live worker", got)
				}
				return
			}
			if timeouts != 1 {
				t.Fatalf("%d worker.timeout events, want 1 once a sample after the line showed the silence", timeouts)
			}
			w.proc.exit(101, 9)
			w.proc.reap(101)
			w.vanish(101, at(10))
			w.end(at(10))
			if r, ok := w.report(101); !ok || r.Incident.Kind != "timeout" || !r.Incident.At.Equal(at(9)) {
				t.Errorf("report %+v, want a timeout at the line's time", r.Incident)
			}
		})
	}
}

// TestHeldTimeoutLineSettledByTheDeath: the worker died before gwrap sampled it again; the last
// sample's silence, carried to the line, decides.
func TestHeldTimeoutLineSettledByTheDeath(t *testing.T) {
	w := newWorld(gunicorn.Settings{Timeout: 4, GracefulTimeout: 2, Workers: 1, WorkerClass: "sync", LogLevel: "info"})
	w.fork(101, at(0))
	w.healthy(101, at(0), at(4))
	w.sweep(101, at(5), time.Second, 40<<20) // silent since 4 s
	w.line(at(9), master, "CRITICAL", "WORKER TIMEOUT (pid:101)")
	w.proc.exit(101, 9)
	w.proc.reap(101)
	w.line(at(9.5), master, "WARNING", "Worker with pid 101 was terminated due to signal 9")
	w.vanish(101, at(9.6))
	w.end(at(10))
	r, ok := w.report(101)
	if !ok || r.Incident.Kind != "timeout" {
		t.Fatalf("report %+v, want the held timeout taken at the death", r.Incident)
	}
	if len(r.Incident.Lines) < 2 || !strings.Contains(r.Incident.Lines[0], "WORKER TIMEOUT") {
		t.Errorf("lines %q: the timeout line first", r.Incident.Lines)
	}
}

// TestABeatWhileTheAbortUnwindsIsNoProof: a gevent worker blocked in C is timed out; as the SIGABRT
// unwinds it, its heartbeat greenlet runs once more, then it dies. That beat came after the line:
// it does not make the line a lie, the death decides.
func TestABeatWhileTheAbortUnwindsIsNoProof(t *testing.T) {
	w := newWorld(gunicorn.Settings{Timeout: 3, GracefulTimeout: 2, Workers: 1, WorkerClass: "gevent", LogLevel: "info"})
	w.fork(101, at(0))
	w.healthy(101, at(0), at(4))
	w.silent(101, at(5), at(8))
	w.line(at(8.1), master, "CRITICAL", "WORKER TIMEOUT (pid:101)")
	w.sweep(101, at(8.3), 100*time.Millisecond, 40<<20) // beat at 8.2, as the abort unwinds it
	w.proc.exit(101, 1<<8)
	w.proc.reap(101)
	w.line(at(8.5), master, "ERROR", "Worker (pid:101) exited with code 1")
	w.vanish(101, at(8.5))
	w.end(at(9))
	r, ok := w.report(101)
	if !ok || r.Incident.Kind != "timeout" || !r.Incident.Timeout {
		t.Fatalf("report %+v (found %v), want the timeout", r.Incident, ok)
	}
}

// TestAGeventWorkerUnwindsForItsGracefulTimeout: once aborted, a gevent worker leaves its loop and
// serves its open connections for up to the graceful timeout, beating every second (ggevent.py),
// then exits: those beats are no sign that it recovered, the timeout is reported. Seen live on
// 23.0 and 26.2.2: the worker beat 40 ms after the line and was gone 2.1 s later.
func TestAGeventWorkerUnwindsForItsGracefulTimeout(t *testing.T) {
	w := newWorld(gunicorn.Settings{Timeout: 6, GracefulTimeout: 30, Workers: 1, WorkerClass: "gevent", LogLevel: "info"})
	w.fork(101, at(0))
	w.healthy(101, at(0), at(4))
	w.silent(101, at(4), at(10.5))
	w.line(at(10.6), master, "CRITICAL", "WORKER TIMEOUT (pid:101)")
	w.sweep(101, at(10.65), 70*time.Millisecond, 40<<20) // beat at 10.58: the abort's, before the relayed line's stamp
	w.healthy(101, at(10.7), at(15))                     // the graceful loop's beats
	if w.st.w.known(101).inc == nil {
		t.Fatalf("the timeout's incident was dropped 4 s into the worker's graceful unwind")
	}
	w.proc.exit(101, 1<<8)
	w.proc.reap(101)
	w.line(at(15.2), master, "ERROR", "Worker (pid:101) exited with code 1")
	w.vanish(101, at(15.2))
	w.end(at(16))
	r, ok := w.report(101)
	if !ok || r.Incident.Kind != "timeout" || !r.Incident.Timeout {
		t.Fatalf("report %+v (found %v), want the timeout", r.Incident, ok)
	}
}

// TestABeatAfterTheLineByALiveWorkerDropsIt: the app printed the master's WORKER TIMEOUT while its
// worker was 5 s into a 6 s request (stale enough to believe); the worker answered and beat after
// the line and lives on: past the grace the line is dropped, and the worker's real timeout later
// is the one reported.
func TestABeatAfterTheLineByALiveWorkerDropsIt(t *testing.T) {
	w := newWorld(gunicorn.Settings{Timeout: 6, GracefulTimeout: 2, Workers: 1, WorkerClass: "sync", LogLevel: "info"})
	w.fork(101, at(0))
	w.healthy(101, at(0), at(10))
	w.silent(101, at(10), at(15))
	w.line(at(15.1), master, "CRITICAL", "WORKER TIMEOUT (pid:101)")
	w.sweep(101, at(15.4), 100*time.Millisecond, 40<<20) // beat at 15.3, after the line
	w.healthy(101, at(16), at(18))
	if inc := w.st.w.known(101).inc; inc != nil {
		t.Fatalf("the printed line's incident is still open 2.7 s after the worker beat again")
	}
	w.silent(101, at(18), at(24))
	w.line(at(24.2), master, "CRITICAL", "WORKER TIMEOUT (pid:101)")
	w.proc.exit(101, 1<<8)
	w.proc.reap(101)
	w.vanish(101, at(24.3))
	w.end(at(25))
	r, ok := w.report(101)
	if !ok || !r.Incident.At.Equal(at(24.2)) {
		t.Fatalf("report at %v (found %v), want the real timeout's at 24.2 s", r.Incident.At, ok)
	}
}
