package postmortem

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

// feed plays a log through a correlator, one line a second apart from t0 (Gunicorn's own
// timestamps are whole seconds), and returns every report.
func feed(t *testing.T, c *Correlator, lines []string, extra func(i int, now time.Time)) []Report {
	t.Helper()
	a := gunicorn.NewAssembler(100, 1<<16)
	now := t0
	var out []Report
	for i, l := range lines {
		_, done := a.Add([]byte(l))
		for _, ev := range done {
			c.Gunicorn(ev, now)
		}
		if extra != nil {
			extra(i, now)
		}
		out = append(out, c.Due(now)...)
		now = now.Add(200 * time.Millisecond)
	}
	for _, ev := range a.Flush() {
		c.Gunicorn(ev, now)
	}
	out = append(out, c.Due(now.Add(time.Minute))...)
	return out
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

type got struct {
	pid   int
	kind  Kind
	cause Cause
}

func summarize(rs []Report) []got {
	var out []got
	for _, r := range rs {
		out = append(out, got{r.Incident.PID, r.Incident.Kind, r.Verdict.Cause})
	}
	return out
}

// scenario replays a Gunicorn log on the clock of its own timestamps, with what the probes and the
// cgroup would have seen: each worker boots with its Booting line and vanishes 300 ms after the
// last line about it (unless vanish says otherwise), a cgroup sample every second whose oom_kill
// counter is readable (unless noCgroup), and the OOM kills listed.
type scenario struct {
	name     string
	log      string            // testdata/logs file, or
	lines    []string          // lines written here
	vanish   map[int]string    // pid → "15:04:05.000" when it vanished, "" = it never did
	ooms     []string          // "15:04:05.000" of each OOM kill event
	hist     map[int]sampleGen // pid → the history the watcher kept
	noCgroup bool
	want     []got
	check    func(t *testing.T, rs map[int]Report)
}

// sampleGen builds a worker's history ending at the given time.
type sampleGen func(end time.Time) []probes.Sample

func busy(cpu float64, state string, beats bool) sampleGen {
	return func(end time.Time) []probes.Sample {
		ss := silence(31, cpu, state, 60<<20)
		for i := range ss {
			ss[i].Time = end.Add(ss[i].Time.Sub(t0))
			ss[i].Heartbeats = beats
		}
		return ss
	}
}

type action struct {
	at    time.Time
	order int
	do    func(now time.Time)
}

func (sc scenario) run(t *testing.T) map[int]Report {
	t.Helper()
	lines := sc.lines
	if sc.log != "" {
		lines = readLines(t, filepath.Join("testdata", "logs", sc.log))
	}
	var day time.Time
	clock := func(hms string) time.Time {
		tm, err := time.Parse("15:04:05.000", hms)
		if err != nil {
			t.Fatalf("bad time %q in the scenario", hms)
		}
		return day.Add(time.Duration(tm.Hour())*time.Hour + time.Duration(tm.Minute())*time.Minute + time.Duration(tm.Second())*time.Second + time.Duration(tm.Nanosecond()))
	}
	ids := map[int]probes.ID{}
	var hist = map[probes.ID]sampleGen{}
	ends := map[probes.ID]time.Time{}
	c := NewCorrelator(gunicorn.Settings{Timeout: 30, GracefulTimeout: 30, Workers: 2, WorkerClass: "sync"}, DefaultThresholds(), Sources{
		History: func(id probes.ID) []probes.Sample {
			if g := hist[id]; g != nil {
				return g(ends[id])
			}
			return nil
		},
	})
	a := gunicorn.NewAssembler(100, 1<<16)
	var acts []action
	var last, first time.Time
	lastAbout := map[int]time.Time{}
	for i, l := range lines {
		ev := gunicorn.ParseLine([]byte(l))
		if !ev.Time.IsZero() {
			last = ev.Time.UTC()
			if first.IsZero() {
				first = last
				day = time.Date(last.Year(), last.Month(), last.Day(), 0, 0, 0, 0, time.UTC)
			}
		}
		at := last
		if ev.Kind == gunicorn.KindBooting {
			id := probes.ID{PID: ev.WorkerPID, StartTime: uint64(1000 + i)}
			ids[id.PID] = id
			hist[id] = sc.hist[id.PID]
			acts = append(acts, action{at, 2*i + 1, func(now time.Time) { c.Probe(probes.Event{Kind: probes.EventBoot, ID: id, Time: now}, now) }})
		}
		if ev.WorkerPID != 0 {
			lastAbout[ev.WorkerPID] = at
		} else if _, ok := ids[ev.PID]; ok {
			lastAbout[ev.PID] = at
		}
		acts = append(acts, action{at, 2 * i, func(now time.Time) {
			_, done := a.Add([]byte(l))
			for _, d := range done {
				c.Gunicorn(d, now)
			}
		}})
	}
	acts = append(acts, action{last, 1 << 30, func(now time.Time) {
		for _, d := range a.Flush() {
			c.Gunicorn(d, now)
		}
	}})
	for pid, id := range ids {
		at := lastAbout[pid].Add(300 * time.Millisecond)
		if hms, ok := sc.vanish[pid]; ok {
			if hms == "" {
				continue
			}
			at = clock(hms)
		}
		ends[id] = at
		acts = append(acts, action{at, 0, func(now time.Time) { c.Probe(probes.Event{Kind: probes.EventVanish, ID: id, Time: now}, now) }})
	}
	var oomTimes []time.Time
	for _, hms := range sc.ooms {
		at := clock(hms)
		oomTimes = append(oomTimes, at)
		acts = append(acts, action{at, 0, func(now time.Time) { c.OOM(memwatch.OOMEvent{Time: now, Count: 1}, now) }})
	}
	if !sc.noCgroup {
		for at := first; !at.After(last.Add(10 * time.Second)); at = at.Add(time.Second) {
			var total uint64
			for _, o := range oomTimes {
				if !o.After(at) {
					total++
				}
			}
			st := memwatch.Stats{Time: at, Version: 1, Usage: memwatch.Value{V: 300 << 20, Known: true},
				WorkingSet: memwatch.Value{V: 200 << 20, Known: true}, Limit: memwatch.Value{V: 1 << 30, Known: true},
				OOMKill: memwatch.Value{V: total, Known: true}}
			acts = append(acts, action{at, -1, func(time.Time) { c.Container(st) }})
		}
	}
	sort.SliceStable(acts, func(i, j int) bool {
		if !acts[i].at.Equal(acts[j].at) {
			return acts[i].at.Before(acts[j].at)
		}
		return acts[i].order < acts[j].order
	})
	out := map[int]Report{}
	collect := func(rs []Report) {
		for _, r := range rs {
			if _, dup := out[r.Incident.PID]; dup {
				t.Errorf("two incidents for worker %d", r.Incident.PID)
			}
			out[r.Incident.PID] = r
		}
	}
	for _, act := range acts {
		act.do(act.at)
		collect(c.Due(act.at))
	}
	collect(c.Due(last.Add(time.Minute)))
	collect(c.Flush(last.Add(2 * time.Minute)))
	return out
}

// TestCorrelateLogs replays every release's sequences (GUNICORN.md §1.3): one incident per dead
// worker, none for the workers a HUP replaced, TTOU removed, max-requests recycled or TERM stopped.
func TestCorrelateLogs(t *testing.T) {
	for _, sc := range []scenario{
		{name: "19.9 logs no SIGKILL and no exit", log: "gunicorn-19.9.0-written.log",
			vanish: map[int]string{101: "03:10:37.100"}, hist: map[int]sampleGen{101: busy(99, "R", true)},
			want: []got{{101, KindTimeout, CauseCPUBound}, {102, KindTimeout, CauseUnknown}},
			check: func(t *testing.T, rs map[int]Report) {
				if r := rs[101]; r.Incident.HandledAbort || !r.Incident.Vanished || len(r.Timeline) != 31 {
					t.Errorf("101: %+v, %d samples", r.Incident, len(r.Timeline))
				}
				if !rs[102].Incident.HandledAbort {
					t.Error("102 handled its SIGABRT (Worker exiting)")
				}
			}},
		{name: "20.0 gthread, a worker gone without a line", log: "gunicorn-20.0.0-written.log",
			vanish: map[int]string{52: "03:05:44.500", 53: ""},
			want:   []got{{51, KindTimeout, CauseUnknown}, {52, KindSignal, CauseCrashed}},
			check: func(t *testing.T, rs map[int]Report) {
				if v := rs[52].Verdict; v.Confidence != "low" || !strings.Contains(v.Summary, "without a Gunicorn line") {
					t.Errorf("52: %s %s", v.Confidence, v.Summary)
				}
			}},
		{name: "20.0 gthread, the silent one was OOM-killed", log: "gunicorn-20.0.0-written.log",
			vanish: map[int]string{52: "03:05:44.500", 53: ""}, ooms: []string{"03:05:44.900"}, // v1's counter lags the vanish
			want: []got{{51, KindTimeout, CauseUnknown}, {52, KindOOMKill, CauseOOMKilled}}},
		// 20.1 logs no exit codes: the os._exit(7) of 3727 and 26455 shows only as a vanish.
		{name: "20.1 real run", log: "gunicorn-20.1.0-sync.log", vanish: map[int]string{3727: "03:43:10.900"},
			want: []got{{3724, KindTimeout, CauseUnknown}, {3723, KindSignal, CauseCrashed}, {3727, KindSignal, CauseCrashed}, {3730, KindSignal, CauseCrashed}},
			check: func(t *testing.T, rs map[int]Report) {
				if s := rs[3730].Incident.Signal; s != "SIGABRT" {
					t.Errorf("3730 died of %q", s)
				}
			}},
		{name: "20.1 captured here", log: "gunicorn-20.1.0-captured.log", vanish: map[int]string{26455: "06:24:59.900"},
			want: []got{{26453, KindTimeout, CauseUnknown}, {26454, KindSignal, CauseCrashed}, {26455, KindSignal, CauseCrashed}, {26456, KindSignal, CauseCrashed}}},
		{name: "20.1 without the cgroup", log: "gunicorn-20.1.0-captured.log", vanish: map[int]string{26455: "06:24:59.900"}, noCgroup: true,
			want: []got{{26453, KindTimeout, CauseUnknown}, {26454, KindSignal, CauseUnknown}, {26455, KindSignal, CauseUnknown}, {26456, KindSignal, CauseCrashed}}},
		{name: "21.2 escalation, OOM kill, SIGSEGV, core dump", log: "gunicorn-21.2.0-written.log",
			ooms: []string{"03:20:50.400"},
			hist: map[int]sampleGen{201: busy(1, "S", true), 202: busy(99, "R", true)},
			want: []got{{201, KindTimeout, CauseBlocked}, {202, KindTimeout, CauseCPUBound}, {203, KindOOMKill, CauseOOMKilled},
				{204, KindSignal, CauseCrashed}, {205, KindSignal, CauseCrashed}},
			check: func(t *testing.T, rs map[int]Report) {
				if inc := rs[201].Incident; !inc.HandledAbort || inc.ExitCode == nil || *inc.ExitCode != 1 || len(inc.Lines) != 3 {
					t.Errorf("201: %+v", inc)
				}
				r := rs[202]
				if !r.Incident.Escalated || !r.Incident.OOMHint || !strings.Contains(r.Verdict.Summary, "not an OOM kill") {
					t.Errorf("202: %+v %s", r.Incident, r.Verdict.Summary)
				}
				if r := rs[203]; r.Incident.OOMKillDelta != 1 || strings.Contains(r.Verdict.Summary, "not an OOM") {
					t.Errorf("203: %+v %s", r.Incident, r.Verdict.Summary)
				}
				if s := rs[205].Incident.Signal; s != "SIGABRT" {
					t.Errorf("205 (code 134) died of %q", s)
				}
			}},
		{name: "22.0 real run", log: "gunicorn-22.0.0-sync.log", hist: map[int]sampleGen{3681: busy(1, "S", true)},
			want: []got{{3681, KindTimeout, CauseBlocked}, {3682, KindSignal, CauseCrashed}, {3688, KindExit, CauseCrashed}, {3690, KindSignal, CauseCrashed}},
			check: func(t *testing.T, rs map[int]Report) {
				inc := rs[3681].Incident
				if !strings.Contains(inc.StuckAt, "app2.py") || !strings.Contains(inc.StuckAt, "time.sleep(30)") || len(inc.Traceback) == 0 {
					t.Errorf("3681 stuck at %q", inc.StuckAt)
				}
				if v := rs[3682].Verdict; !strings.Contains(v.Summary, "is a guess") {
					t.Errorf("3682: %s", v.Summary)
				}
			}},
		{name: "23.0 boot failure", log: "gunicorn-23.0.0-written.log",
			want: []got{{301, KindExit, CauseCrashed}},
			check: func(t *testing.T, rs map[int]Report) {
				r := rs[301]
				if len(r.Incident.Traceback) < 5 || !strings.Contains(r.Verdict.Summary, "failed to boot (exit code 3): ModuleNotFoundError") {
					t.Errorf("301: %d traceback lines, %s", len(r.Incident.Traceback), r.Verdict.Summary)
				}
			}},
		{name: "24.1 real run", log: "gunicorn-24.1.1-sync.log",
			want: []got{{3703, KindTimeout, CauseUnknown}, {3702, KindSignal, CauseCrashed}, {3706, KindExit, CauseCrashed}, {3712, KindSignal, CauseCrashed}}},
		{name: "26.1 uvicorn abort", log: "gunicorn-26.1.0-written.log", vanish: map[int]string{405: "03:41:00.500"},
			want: []got{{401, KindTimeout, CauseUnknown}, {402, KindSignal, CauseCrashed}, {403, KindExit, CauseCrashed}},
			check: func(t *testing.T, rs map[int]Report) {
				if inc := rs[401].Incident; inc.Signal != "SIGABRT" || inc.Escalated {
					t.Errorf("401: %+v", inc)
				}
			}},
		{name: "≤21 timing out a worker that never booted", hist: map[int]sampleGen{501: busy(3, "S", false)},
			lines: []string{
				"[2026-11-25 04:00:00 +0000] [500] [INFO] Starting gunicorn 20.1.0",
				"[2026-11-25 04:00:00 +0000] [501] [INFO] Booting worker with pid: 501",
				"[2026-11-25 04:00:31 +0000] [500] [CRITICAL] WORKER TIMEOUT (pid:501)",
				"[2026-11-25 04:00:31 +0000] [501] [INFO] Worker exiting (pid: 501)",
				"[2026-11-25 04:00:31 +0000] [502] [INFO] Booting worker with pid: 502",
			}, vanish: map[int]string{502: ""},
			want: []got{{501, KindTimeout, CauseBootTimeout}}},
		{name: "SIGKILL after graceful_timeout at shutdown is not an incident",
			lines: []string{
				"[2026-11-25 04:10:00 +0000] [600] [INFO] Booting worker with pid: 601",
				"[2026-11-25 04:10:20 +0000] [600] [INFO] Handling signal: term",
				"[2026-11-25 04:10:50 +0000] [600] [ERROR] Worker (pid:601) was sent SIGKILL! Perhaps out of memory?",
				"[2026-11-25 04:10:50 +0000] [600] [INFO] Shutting down: Master",
			}},
		{name: "…unless the OOM killer took it", ooms: []string{"04:10:49.500"},
			lines: []string{
				"[2026-11-25 04:10:00 +0000] [600] [INFO] Booting worker with pid: 601",
				"[2026-11-25 04:10:20 +0000] [600] [INFO] Handling signal: term",
				"[2026-11-25 04:10:50 +0000] [600] [ERROR] Worker (pid:601) was sent SIGKILL! Perhaps out of memory?",
				"[2026-11-25 04:10:50 +0000] [600] [INFO] Shutting down: Master",
			},
			want: []got{{601, KindOOMKill, CauseOOMKilled}}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			rs := sc.run(t)
			var gots []got
			for _, r := range rs {
				gots = append(gots, got{r.Incident.PID, r.Incident.Kind, r.Verdict.Cause})
			}
			sort.Slice(gots, func(i, j int) bool { return gots[i].pid < gots[j].pid })
			sort.Slice(sc.want, func(i, j int) bool { return sc.want[i].pid < sc.want[j].pid })
			if fmt.Sprint(gots) != fmt.Sprint(sc.want) {
				t.Fatalf("incidents\n got %+v\nwant %+v", gots, sc.want)
			}
			for _, r := range rs {
				if r.Schema != Schema || r.Verdict.Summary == "" || r.Incident.At.IsZero() || len(r.Container.Samples) == 0 && !sc.noCgroup {
					t.Errorf("incomplete report %+v", r)
				}
			}
			if sc.check != nil {
				sc.check(t, rs)
			}
		})
	}
}

// TestEscalationWithSamples: the 21.2 sequence WORKER TIMEOUT → SIGKILL "Perhaps out of memory?"
// with a CPU-bound history and no OOM: cpu_bound, and the summary says it was not an OOM.
func TestEscalationWithSamples(t *testing.T) {
	id := probes.ID{PID: 202, StartTime: 99}
	hist := silence(31, 99, "R", 50<<20)
	c := NewCorrelator(gunicorn.Settings{Timeout: 30, WorkerClass: "sync"}, DefaultThresholds(), Sources{
		History: func(i probes.ID) []probes.Sample {
			if i == id {
				return hist
			}
			return nil
		},
	})
	c.Probe(probes.Event{Kind: probes.EventBoot, ID: id}, t0.Add(-40*time.Second))
	for _, st := range cgroup(31, 100<<20, 1<<30, 0, 0) { // oom_kill read, not moving
		c.Container(st)
	}
	lines := []string{
		"[2026-11-25 03:20:40 +0000] [200] [CRITICAL] WORKER TIMEOUT (pid:202)",
		"[2026-11-25 03:20:41 +0000] [200] [ERROR] Worker (pid:202) was sent SIGKILL! Perhaps out of memory?",
	}
	rs := feed(t, c, lines, func(i int, now time.Time) {
		if i == 1 {
			c.Probe(probes.Event{Kind: probes.EventVanish, ID: id, Time: now}, now)
		}
	})
	if len(rs) != 1 {
		t.Fatalf("%d reports", len(rs))
	}
	r := rs[0]
	if r.Verdict.Cause != CauseCPUBound || !r.Incident.Escalated || !strings.Contains(r.Verdict.Summary, "not an OOM kill") {
		t.Errorf("%s: %s", r.Verdict.Cause, r.Verdict.Summary)
	}
	if len(r.Timeline) != 31 {
		t.Errorf("timeline of %d points", len(r.Timeline))
	}
}

// TestOOMWithoutLines: a worker vanishes (log level warning hides nothing here, 19.9 logs nothing)
// as the cgroup's oom_kill counter moves: one oom_kill incident.
func TestOOMWithoutLines(t *testing.T) {
	id := probes.ID{PID: 55, StartTime: 1}
	c := NewCorrelator(gunicorn.Defaults(), DefaultThresholds(), Sources{})
	c.Probe(probes.Event{Kind: probes.EventBoot, ID: id}, t0)
	c.Container(memwatch.Stats{Time: t0, Limit: memwatch.Value{V: 100, Known: true}, WorkingSet: memwatch.Value{V: 99, Known: true}})
	c.OOM(memwatch.OOMEvent{Time: t0.Add(time.Second), Count: 1, Total: 1}, t0.Add(time.Second))
	c.Probe(probes.Event{Kind: probes.EventVanish, ID: id}, t0.Add(1200*time.Millisecond))
	if rs := c.Due(t0.Add(2 * time.Second)); len(rs) != 0 {
		t.Fatalf("reported before the follow-up window: %+v", summarize(rs))
	}
	rs := c.Due(t0.Add(10 * time.Second))
	if len(rs) != 1 || rs[0].Verdict.Cause != CauseOOMKilled || rs[0].Incident.Kind != KindOOMKill || !rs[0].Verdict.NearMemoryLimit {
		t.Fatalf("%+v", summarize(rs))
	}
	// The 20.1 line arriving later for the same worker does not make a second incident.
	c.Gunicorn(gunicorn.ParseLine([]byte("[2026-11-25 03:42:40 +0000] [1] [WARNING] Worker with pid 55 was terminated due to signal 9")), t0.Add(11*time.Second))
	if rs := c.Flush(t0.Add(time.Minute)); len(rs) != 0 {
		t.Errorf("second incident: %+v", summarize(rs))
	}
}

// TestNormalExitsMakeNoIncident: max-requests restarts, HUP and TERM are not kills.
func TestNormalExitsMakeNoIncident(t *testing.T) {
	c := NewCorrelator(gunicorn.Defaults(), DefaultThresholds(), Sources{})
	ids := []probes.ID{{PID: 10, StartTime: 1}, {PID: 11, StartTime: 1}}
	for _, id := range ids {
		c.Probe(probes.Event{Kind: probes.EventBoot, ID: id}, t0)
	}
	c.Gunicorn(gunicorn.ParseLine([]byte("[2026-11-25 03:42:30 +0000] [10] [INFO] Autorestarting worker after current request.")), t0)
	c.Gunicorn(gunicorn.ParseLine([]byte("[2026-11-25 03:42:30 +0000] [10] [INFO] Worker exiting (pid: 10)")), t0)
	c.Probe(probes.Event{Kind: probes.EventVanish, ID: ids[0]}, t0.Add(time.Second))
	c.Gunicorn(gunicorn.ParseLine([]byte("[2026-11-25 03:42:31 +0000] [1] [INFO] Handling signal: term")), t0.Add(time.Second))
	c.Probe(probes.Event{Kind: probes.EventVanish, ID: ids[1]}, t0.Add(2*time.Second))
	if rs := c.Flush(t0.Add(time.Minute)); len(rs) != 0 {
		t.Errorf("incidents for normal exits: %+v", summarize(rs))
	}
}

func TestStuckBootReportedOnce(t *testing.T) {
	id := probes.ID{PID: 77, StartTime: 5}
	c := NewCorrelator(gunicorn.Settings{Timeout: 3}, DefaultThresholds(), Sources{})
	c.Probe(probes.Event{Kind: probes.EventBoot, ID: id}, t0)
	c.Probe(probes.Event{Kind: probes.EventStuckBoot, ID: id}, t0.Add(4*time.Second))
	rs := c.Due(t0.Add(10 * time.Second))
	if len(rs) != 1 || rs[0].Verdict.Cause != CauseBootTimeout {
		t.Fatalf("%+v", summarize(rs))
	}
	c.Probe(probes.Event{Kind: probes.EventVanish, ID: id}, t0.Add(20*time.Second))
	if rs := c.Flush(t0.Add(time.Minute)); len(rs) != 0 {
		t.Errorf("the stuck worker was reported twice: %+v", summarize(rs))
	}
}

// TestCorrelatorForgetsRecycledWorkers: max-requests recycling ten thousand workers leaves the
// correlator's memory as small as its live workers, and makes no incident.
func TestCorrelatorForgetsRecycledWorkers(t *testing.T) {
	c := NewCorrelator(gunicorn.Defaults(), DefaultThresholds(), Sources{})
	now := t0
	for i := 0; i < 10000; i++ {
		id := probes.ID{PID: 1000 + i%30000, StartTime: uint64(i)}
		c.Probe(probes.Event{Kind: probes.EventBoot, ID: id}, now)
		c.Gunicorn(gunicorn.Event{Kind: gunicorn.KindBooting, WorkerPID: id.PID, PID: id.PID}, now)
		c.Gunicorn(gunicorn.Event{Kind: gunicorn.KindAutorestart, PID: id.PID}, now)
		c.Gunicorn(gunicorn.Event{Kind: gunicorn.KindWorkerExiting, WorkerPID: id.PID, PID: id.PID}, now)
		c.Probe(probes.Event{Kind: probes.EventVanish, ID: id}, now)
		if rs := c.Due(now); len(rs) != 0 {
			t.Fatalf("incident for a recycled worker: %+v", summarize(rs))
		}
		now = now.Add(100 * time.Millisecond)
	}
	// …and a few that died, reported and then forgotten.
	for i := 0; i < 50; i++ {
		id := probes.ID{PID: 50000 + i, StartTime: 1}
		c.Probe(probes.Event{Kind: probes.EventBoot, ID: id}, now)
		c.Gunicorn(gunicorn.Event{Kind: gunicorn.KindSignaled, WorkerPID: id.PID, Signal: 11, SignalName: "SIGSEGV"}, now)
		c.Probe(probes.Event{Kind: probes.EventVanish, ID: id}, now)
	}
	if rs := c.Due(now.Add(time.Minute)); len(rs) != 50 {
		t.Fatalf("%d reports, want 50", len(rs))
	}
	c.Due(now.Add(memory + 2*time.Minute))
	if n := len(c.ids) + len(c.booted) + len(c.lastEvent) + len(c.done) + len(c.doneLog) + len(c.calm) + len(c.open); n != 0 {
		t.Errorf("remembers %d things: ids %d booted %d lastEvent %d done %d doneLog %d calm %d open %d", n,
			len(c.ids), len(c.booted), len(c.lastEvent), len(c.done), len(c.doneLog), len(c.calm), len(c.open))
	}
}

// TestContainerRingIsBounded: an hour of cgroup samples keeps at most twice the bound, the newest
// last, and a report gets the samples of the minutes before its incident.
func TestContainerRingIsBounded(t *testing.T) {
	c := NewCorrelator(gunicorn.Defaults(), DefaultThresholds(), Sources{})
	var last time.Time
	for i := 0; i < 3600; i++ {
		last = t0.Add(time.Duration(i) * time.Second)
		c.Container(memwatch.Stats{Time: last})
		if len(c.container) > 2*containerKeep {
			t.Fatalf("%d samples kept", len(c.container))
		}
	}
	if got := c.container[len(c.container)-1].Time; !got.Equal(last) {
		t.Errorf("newest sample %v, want %v", got, last)
	}
	if n := len(c.containerAround(last)); n != 300 {
		t.Errorf("%d samples around the incident, want the 5 minutes before it (300)", n)
	}
}

// TestFollowUpWindow: an incident is classified exactly when its window has passed, not before;
// Flush classifies what is pending at once.
func TestFollowUpWindow(t *testing.T) {
	th := DefaultThresholds()
	th.FollowUpWindow = 2 * time.Second
	c := NewCorrelator(gunicorn.Defaults(), th, Sources{})
	segv := gunicorn.ParseLine([]byte("[2026-11-25 03:20:55 +0000] [200] [ERROR] Worker (pid:204) was sent SIGSEGV!"))
	c.Gunicorn(segv, t0)
	if rs := c.Due(t0.Add(th.FollowUpWindow - time.Nanosecond)); len(rs) != 0 {
		t.Fatalf("classified before the window passed: %+v", summarize(rs))
	}
	if rs := c.Due(t0.Add(th.FollowUpWindow)); len(rs) != 1 {
		t.Fatalf("%d reports when the window passed", len(rs))
	}
	c.Gunicorn(gunicorn.ParseLine([]byte("[2026-11-25 03:20:58 +0000] [200] [ERROR] Worker (pid:205) was sent SIGSEGV!")), t0)
	if rs := c.Flush(t0); len(rs) != 1 || rs[0].Incident.PID != 205 {
		t.Fatalf("flush: %+v", summarize(rs))
	}
}
