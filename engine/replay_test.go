package engine

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
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

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
	kind  postmortem.Kind
	cause postmortem.Cause
}

// Aliases keep the scenario tables short.
const (
	KindTimeout     = postmortem.KindTimeout
	KindOOMKill     = postmortem.KindOOMKill
	KindSignal      = postmortem.KindSignal
	KindExit        = postmortem.KindExit
	KindBootFailure = postmortem.KindBootFailure

	CauseCPUBound    = postmortem.CauseCPUBound
	CauseBlocked     = postmortem.CauseBlocked
	CauseCrashed     = postmortem.CauseCrashed
	CauseUnknown     = postmortem.CauseUnknown
	CauseOOMKilled   = postmortem.CauseOOMKilled
	CauseBootTimeout = postmortem.CauseBootTimeout
)

// scenario replays a Gunicorn log through the engine's state on the clock of the log's own
// timestamps, with what the watcher and the cgroup would have seen: the master found first, each
// worker watched from its Booting line and sampled every second (its heartbeat going stale over
// the 31 s before a WORKER TIMEOUT about it, healthy otherwise, unless hist says otherwise),
// vanishing 300 ms after the last line about it (unless vanish says otherwise), a cgroup sample
// every second whose oom_kill counter is readable (unless noCgroup), and the OOM kills listed.
type scenario struct {
	name     string
	log      string   // testdata/logs file of the gunicorn package, or
	lines    []string // lines written here
	settings *gunicorn.Settings
	vanish   map[int]string    // pid → "15:04:05.000" when it vanished, "" = it never did
	ooms     []string          // "15:04:05.000" of each OOM kill event
	hist     map[int]sampleGen // pid → the samples the watcher took
	noCgroup bool
	want     []got
	check    func(t *testing.T, rs map[int]postmortem.Report, events []Event)
}

// sampleGen builds a worker's samples from its boot to its end.
type sampleGen func(boot, end time.Time) []probes.Sample

// busy is a worker silent for the 31 s before its end at this CPU and state.
func busy(cpu float64, state string, beats bool) sampleGen {
	return func(boot, end time.Time) []probes.Sample {
		var out []probes.Sample
		for i := 30; i >= 0; i-- {
			out = append(out, probes.Sample{Time: end.Add(-time.Duration(i) * time.Second), CPUUser: cpu, State: state,
				RSSAnon: 60 << 20, HeartbeatAge: time.Duration(30-i) * time.Second, Heartbeats: beats})
		}
		return out
	}
}

// healthy is a worker beating every 5 s.
func healthy(boot, end time.Time) []probes.Sample {
	var out []probes.Sample
	for t := boot; !t.After(end); t = t.Add(time.Second) {
		out = append(out, probes.Sample{Time: t, CPUUser: 1, State: "S", RSSAnon: 50 << 20,
			HeartbeatAge: t.Sub(boot) % (5 * time.Second), Heartbeats: true})
	}
	return out
}

type action struct {
	at    time.Time
	order int
	do    func(now time.Time)
}

// recorder is the Emitter and the Reporter of the tests.
type recorder struct {
	events  []Event
	relayed int
	reports []postmortem.Report
	warned  map[string]bool
}

func (r *recorder) Relay(string, []byte, gunicorn.Event, time.Time) { r.relayed++ }

// Emit keeps the event; like the outputs' registry, it drops a warning whose key was said.
func (r *recorder) Emit(e Event) {
	if w, ok := e.Fact.(Warning); ok {
		if r.warned[w.Key] {
			return
		}
		if r.warned == nil {
			r.warned = map[string]bool{}
		}
		r.warned[w.Key] = true
	}
	r.events = append(r.events, e)
}
func (r *recorder) Write(rep postmortem.Report) (string, error) {
	r.reports = append(r.reports, rep)
	return "mem/" + rep.ID + ".json", nil
}

func (r *recorder) named(name string) []Event {
	var out []Event
	for _, e := range r.events {
		if e.Name == name {
			out = append(out, e)
		}
	}
	return out
}

func testState(settings gunicorn.Settings) (*state, *recorder) {
	rec := &recorder{}
	cfg := Config{Settings: settings, Thresholds: postmortem.DefaultThresholds(), Reports: rec,
		History: 5 * time.Minute, Interval: time.Second}
	return newState(cfg, rec), rec
}

func (sc scenario) run(t *testing.T) (map[int]postmortem.Report, *recorder) {
	t.Helper()
	lines := sc.lines
	if sc.log != "" {
		lines = readLines(t, filepath.Join("..", "gunicorn", "testdata", "logs", sc.log))
	}
	settings := gunicorn.Settings{Timeout: 30, GracefulTimeout: 30, Workers: 2, WorkerClass: "sync", LogLevel: "info"}
	if sc.settings != nil {
		settings = *sc.settings
	}
	st, rec := testState(settings)
	var day time.Time
	clock := func(hms string) time.Time {
		tm, err := time.Parse("15:04:05.000", hms)
		if err != nil {
			t.Fatalf("bad time %q in the scenario", hms)
		}
		return day.Add(time.Duration(tm.Hour())*time.Hour + time.Duration(tm.Minute())*time.Minute + time.Duration(tm.Second())*time.Second + time.Duration(tm.Nanosecond()))
	}
	type wk struct {
		id        probes.ID
		boot      time.Time
		timeoutAt time.Time
	}
	workers := map[int]*wk{}
	var acts []action
	var last, first time.Time
	master := 0
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
		switch ev.Kind {
		case gunicorn.KindStarting, gunicorn.KindListening, gunicorn.KindTimeout, gunicorn.KindSignaled, gunicorn.KindExited,
			gunicorn.KindHandlingSignal, gunicorn.KindShuttingDown, gunicorn.KindReason:
			if master == 0 && ev.PID != 0 && ev.PID != ev.WorkerPID {
				master = ev.PID
			}
		case gunicorn.KindBooting:
			w := &wk{id: probes.ID{PID: ev.WorkerPID, StartTime: uint64(1000 + i)}, boot: at}
			workers[w.id.PID] = w
			acts = append(acts, action{at, 2*i + 1, func(now time.Time) {
				st.probe(probes.Event{Kind: probes.EventBoot, ID: w.id, Time: now})
			}})
		}
		if ev.Kind == gunicorn.KindTimeout {
			if w := workers[ev.WorkerPID]; w != nil && w.timeoutAt.IsZero() {
				w.timeoutAt = at
			}
		}
		if ev.WorkerPID != 0 {
			lastAbout[ev.WorkerPID] = at
		} else if _, ok := workers[ev.PID]; ok {
			lastAbout[ev.PID] = at
		}
		acts = append(acts, action{at, 2 * i, func(now time.Time) { st.line("stderr", []byte(l), now) }})
	}
	m := master
	acts = append(acts, action{first.Add(-time.Second), 0, func(now time.Time) {
		st.probe(probes.Event{Kind: probes.EventMaster, ID: probes.ID{PID: m}, Time: now})
	}})
	for pid, w := range workers {
		end := lastAbout[pid].Add(300 * time.Millisecond)
		vanishes := true
		if hms, ok := sc.vanish[pid]; ok {
			if hms == "" {
				vanishes = false
				end = last
			} else {
				end = clock(hms)
			}
		}
		var samples []probes.Sample
		switch gen := sc.hist[pid]; {
		case gen != nil:
			last := end
			if !w.timeoutAt.IsZero() {
				last = w.timeoutAt
			}
			samples = gen(w.boot, last.Add(-100*time.Millisecond))
		case !w.timeoutAt.IsZero():
			samples = busy(1, "S", true)(w.boot, w.timeoutAt.Add(-100*time.Millisecond))
		default:
			samples = healthy(w.boot, end.Add(-500*time.Millisecond))
		}
		for _, sm := range samples {
			if sm.Time.Before(w.boot) {
				continue
			}
			acts = append(acts, action{sm.Time, -2, func(now time.Time) {
				st.probe(probes.Event{Kind: probes.EventSample, ID: w.id, Time: now, Sample: sm})
			}})
		}
		if vanishes {
			id := w.id
			acts = append(acts, action{end, 0, func(now time.Time) { st.probe(probes.Event{Kind: probes.EventVanish, ID: id, Time: now}) }})
		}
	}
	var oomTimes []time.Time
	for _, hms := range sc.ooms {
		at := clock(hms)
		oomTimes = append(oomTimes, at)
		acts = append(acts, action{at, 0, func(now time.Time) { st.oom(oomIn{ev: memwatch.OOMEvent{Time: now, Count: 1}}, now) }})
	}
	if !sc.noCgroup {
		for at := first; !at.After(last.Add(10 * time.Second)); at = at.Add(time.Second) {
			var total uint64
			for _, o := range oomTimes {
				if !o.After(at) {
					total++
				}
			}
			cs := memwatch.Stats{Time: at, Version: 1, Usage: memwatch.Value{V: 300 << 20, Known: true},
				WorkingSet: memwatch.Value{V: 200 << 20, Known: true}, Limit: memwatch.Value{V: 1 << 30, Known: true},
				OOMKill: memwatch.Value{V: total, Known: true}}
			acts = append(acts, action{at, -1, func(time.Time) { st.containerSample(cs) }})
		}
	}
	sort.SliceStable(acts, func(i, j int) bool {
		if !acts[i].at.Equal(acts[j].at) {
			return acts[i].at.Before(acts[j].at)
		}
		return acts[i].order < acts[j].order
	})
	for _, act := range acts {
		act.do(act.at)
		st.tick(act.at)
	}
	st.tick(last.Add(time.Minute))
	st.flush(last.Add(2 * time.Minute))
	out := map[int]postmortem.Report{}
	for _, r := range rec.reports {
		if _, dup := out[r.Incident.PID]; dup {
			t.Errorf("two incidents for worker %d", r.Incident.PID)
		}
		out[r.Incident.PID] = r
	}
	if n := len(rec.named("postmortem")); n != len(rec.reports) {
		t.Errorf("%d postmortem events for %d reports", n, len(rec.reports))
	}
	return out, rec
}

// TestCorrelateLogs replays every release's sequences (gunicorn/testdata/logs): one incident per dead
// worker, none for the workers a HUP replaced, TTOU removed, max-requests recycled or TERM stopped.
func TestReplayLogs(t *testing.T) {
	for _, sc := range []scenario{
		{name: "19.9 logs no SIGKILL and no exit", log: "gunicorn-19.9.0-written.log",
			vanish: map[int]string{101: "03:10:37.100"}, hist: map[int]sampleGen{101: busy(99, "R", true)},
			want: []got{{101, KindTimeout, CauseCPUBound}, {102, KindTimeout, CauseBlocked}},
			check: func(t *testing.T, rs map[int]postmortem.Report, _ []Event) {
				if r := rs[101]; r.Incident.HandledAbort || !r.Incident.Vanished || len(r.Timeline) != 31 {
					t.Errorf("101: %+v, %d samples", r.Incident, len(r.Timeline))
				}
				if !rs[102].Incident.HandledAbort {
					t.Error("102 handled its SIGABRT (Worker exiting)")
				}
			}},
		{name: "20.0 gthread, a worker gone without a line", log: "gunicorn-20.0.0-written.log",
			vanish: map[int]string{52: "03:05:44.500", 53: ""},
			want:   []got{{51, KindTimeout, CauseBlocked}, {52, KindSignal, CauseCrashed}},
			check: func(t *testing.T, rs map[int]postmortem.Report, _ []Event) {
				if v := rs[52].Verdict; v.Confidence != "low" || !strings.Contains(v.Summary, "without a Gunicorn line") {
					t.Errorf("52: %s %s", v.Confidence, v.Summary)
				}
			}},
		{name: "20.0 gthread, the silent one was OOM-killed", log: "gunicorn-20.0.0-written.log",
			vanish: map[int]string{52: "03:05:44.500", 53: ""}, ooms: []string{"03:05:44.900"}, // v1's counter lags the vanish
			want: []got{{51, KindTimeout, CauseBlocked}, {52, KindOOMKill, CauseOOMKilled}}},
		// 20.1 logs no exit codes: the os._exit(7) of 3727 and 26455 shows only as a vanish.
		{name: "20.1 real run", log: "gunicorn-20.1.0-sync.log", vanish: map[int]string{3727: "03:43:10.900"},
			want: []got{{3724, KindTimeout, CauseBlocked}, {3723, KindSignal, CauseCrashed}, {3727, KindSignal, CauseCrashed}, {3730, KindSignal, CauseCrashed}},
			check: func(t *testing.T, rs map[int]postmortem.Report, _ []Event) {
				if s := rs[3730].Incident.Signal; s != "SIGABRT" {
					t.Errorf("3730 died of %q", s)
				}
			}},
		{name: "20.1 captured here", log: "gunicorn-20.1.0-captured.log", vanish: map[int]string{26455: "06:24:59.900"},
			want: []got{{26453, KindTimeout, CauseBlocked}, {26454, KindSignal, CauseCrashed}, {26455, KindSignal, CauseCrashed}, {26456, KindSignal, CauseCrashed}}},
		{name: "20.1 without the cgroup", log: "gunicorn-20.1.0-captured.log", vanish: map[int]string{26455: "06:24:59.900"}, noCgroup: true,
			want: []got{{26453, KindTimeout, CauseBlocked}, {26454, KindSignal, CauseUnknown}, {26455, KindSignal, CauseUnknown}, {26456, KindSignal, CauseCrashed}}},
		{name: "21.2 escalation, OOM kill, SIGSEGV, core dump", log: "gunicorn-21.2.0-written.log",
			ooms: []string{"03:20:50.400"},
			hist: map[int]sampleGen{201: busy(1, "S", true), 202: busy(99, "R", true)},
			want: []got{{201, KindTimeout, CauseBlocked}, {202, KindTimeout, CauseCPUBound}, {203, KindOOMKill, CauseOOMKilled},
				{204, KindSignal, CauseCrashed}, {205, KindSignal, CauseCrashed}},
			check: func(t *testing.T, rs map[int]postmortem.Report, _ []Event) {
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
			check: func(t *testing.T, rs map[int]postmortem.Report, _ []Event) {
				inc := rs[3681].Incident
				if !strings.Contains(inc.StuckAt, "app2.py") || !strings.Contains(inc.StuckAt, "time.sleep(30)") || len(inc.Traceback) == 0 {
					t.Errorf("3681 stuck at %q", inc.StuckAt)
				}
				if v := rs[3682].Verdict; !strings.Contains(v.Summary, "is a guess") {
					t.Errorf("3682: %s", v.Summary)
				}
			}},
		{name: "23.0 boot failure", log: "gunicorn-23.0.0-written.log",
			want: []got{{301, KindBootFailure, CauseCrashed}},
			check: func(t *testing.T, rs map[int]postmortem.Report, _ []Event) {
				r := rs[301]
				if len(r.Incident.Traceback) < 5 || !strings.Contains(r.Verdict.Summary, "failed to boot (exit code 3): ModuleNotFoundError") {
					t.Errorf("301: %d traceback lines, %s", len(r.Incident.Traceback), r.Verdict.Summary)
				}
			}},
		{name: "24.1 real run", log: "gunicorn-24.1.1-sync.log",
			want: []got{{3703, KindTimeout, CauseBlocked}, {3702, KindSignal, CauseCrashed}, {3706, KindExit, CauseCrashed}, {3712, KindSignal, CauseCrashed}}},
		{name: "26.1 uvicorn abort", log: "gunicorn-26.1.0-written.log", vanish: map[int]string{405: "03:41:00.500"},
			want: []got{{401, KindTimeout, CauseBlocked}, {402, KindSignal, CauseCrashed}, {403, KindExit, CauseCrashed}},
			check: func(t *testing.T, rs map[int]postmortem.Report, _ []Event) {
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
		{name: "max-requests recycling at log level warning makes no incident",
			settings: &gunicorn.Settings{Timeout: 30, WorkerClass: "sync", LogLevel: "warning"},
			lines: []string{
				"[2026-11-25 05:00:00 +0000] [700] [INFO] Starting gunicorn 23.0.0",
				"[2026-11-25 05:00:00 +0000] [701] [INFO] Booting worker with pid: 701",
				"[2026-11-25 05:00:00 +0000] [702] [INFO] Booting worker with pid: 702",
				"[2026-11-25 05:00:09 +0000] [703] [INFO] Booting worker with pid: 703",
			}, vanish: map[int]string{701: "05:00:05.000", 702: "05:00:08.000", 703: ""}},
		{name: "a Worker exiting line that comes after the vanish still dismisses it",
			lines: []string{
				"[2026-11-25 05:10:00 +0000] [710] [INFO] Starting gunicorn 20.1.0",
				"[2026-11-25 05:10:00 +0000] [711] [INFO] Booting worker with pid: 711",
				"[2026-11-25 05:10:05 +0000] [711] [INFO] Autorestarting worker after current request.",
				"[2026-11-25 05:10:06 +0000] [711] [INFO] Worker exiting (pid: 711)",
			}, vanish: map[int]string{711: "05:10:05.200"}},
		{name: "lines the app prints never make an incident",
			lines: []string{
				"[2026-11-25 05:20:00 +0000] [720] [INFO] Starting gunicorn 23.0.0",
				"[2026-11-25 05:20:00 +0000] [721] [INFO] Booting worker with pid: 721",
				"[2026-11-25 05:20:10 +0000] [721] [CRITICAL] WORKER TIMEOUT (pid:721)",
				"GET /x?WORKER TIMEOUT (pid:1) HTTP/1.1",
				"[2026-11-25 05:20:11 +0000] [720] [CRITICAL] WORKER TIMEOUT (pid:999999)",
				"[2026-11-25 05:20:12 +0000] [720] [CRITICAL] WORKER TIMEOUT (pid:721)",
				"[2026-11-25 05:20:13 +0000] [721] [ERROR] Worker (pid:721) was sent SIGSEGV!",
				"Worker (pid:721) was sent SIGKILL! Perhaps out of memory?",
			}, vanish: map[int]string{721: ""}, hist: map[int]sampleGen{721: healthy},
			check: func(t *testing.T, _ map[int]postmortem.Report, events []Event) {
				var warned int
				for _, e := range events {
					if e.Name == "worker.timeout" || e.Name == "worker.killed" {
						t.Errorf("a forged line made %s: %s", e.Name, e.Message)
					}
					if code, _ := e.Get("code"); code == "unverified_line" {
						warned++
					}
				}
				if warned != 1 {
					t.Errorf("%d warnings about unverified lines, want one", warned)
				}
			}},
		{name: "a graceful stop: no worker.late, no incident for the workers it ends",
			lines: []string{
				"[2026-11-25 05:30:00 +0000] [730] [INFO] Starting gunicorn 26.1.0",
				"[2026-11-25 05:30:00 +0000] [731] [INFO] Booting worker with pid: 731",
				"[2026-11-25 05:30:10 +0000] [730] [INFO] Handling signal: term",
				"[2026-11-25 05:30:40 +0000] [730] [ERROR] Worker (pid:731) was sent SIGKILL! Perhaps out of memory?",
				"[2026-11-25 05:30:40 +0000] [730] [INFO] Shutting down: Master",
			}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			rs, rec := sc.run(t)
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
				if r.Schema != postmortem.Schema || r.Verdict.Summary == "" || r.Incident.At.IsZero() || len(r.Container.Samples) == 0 && !sc.noCgroup {
					t.Errorf("incomplete report %+v", r)
				}
			}
			if sc.check != nil {
				sc.check(t, rs, rec.events)
			}
		})
	}
}
