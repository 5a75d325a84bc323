package postmortem

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

var update = flag.Bool("update", false, "rewrite the golden report files in testdata/golden")

// goldenEvidence is a representative incident: a sync worker of Gunicorn 23 timed out waiting on
// PostgreSQL while the server was saturated, its memory having grown; the samples include the
// worker's first (no CPU rate), one whose status was unreadable, the exiting process at the
// incident, and a cgroup sample after it, with an unreadable oom_kill counter at the start.
func goldenEvidence() Evidence {
	s := gunicorn.Defaults()
	s.Timeout, s.Workers, s.WorkerClass = 30, 2, "sync"
	var tl []probes.Sample
	var cg []memwatch.Stats
	for i := 0; i <= 40; i++ {
		at := t0.Add(time.Duration(i-40) * time.Second)
		age := time.Duration(max(0, i-8)) * time.Second
		smp := probes.Sample{Time: at, RSSAnon: uint64(60+4*i) * mb, RSSFile: 5 * mb, CPUUser: 2, CPUSystem: 1, State: "S",
			HeartbeatAge: age, Heartbeats: true, RunDelayPct: 0.5, MajorFaults: 12}
		if i == 0 {
			smp.NoRates, smp.CPUUser, smp.CPUSystem, smp.RunDelayPct = true, 0, 0, 0
		}
		if i == 20 {
			smp.Missing, smp.RSSAnon, smp.RSSFile = []string{"status"}, 0, 0
		}
		if i == 40 { // the exiting process, at the incident
			smp.RSSAnon, smp.RSSFile, smp.State = 20*mb, 0, "R"
		}
		tl = append(tl, smp)
		st := memwatch.Stats{Time: at, Version: 1, Usage: known(uint64(300+4*i) * mb), WorkingSet: known(uint64(280+4*i) * mb),
			Limit: known(1024 * mb), Peak: known(512 * mb), OOMKill: known(0), CPUThrottled: known(0)}
		if i == 0 {
			st.OOMKill = memwatch.Value{}
		}
		if i == 10 {
			st.WorkingSet, st.Usage = memwatch.Value{}, memwatch.Value{}
		}
		cg = append(cg, st)
	}
	cg = append(cg, memwatch.Stats{Time: t0.Add(time.Second), Version: 1, Usage: known(150 * mb), WorkingSet: known(140 * mb),
		Limit: known(1024 * mb), Peak: known(512 * mb), OOMKill: known(0), CPUThrottled: known(0)})
	inc := Incident{Kind: KindTimeout, PID: 91, StartTime: 123456, At: t0, Timeout: true, Vanished: true, Escalated: true, Signal: "SIGKILL", OOMHint: true,
		Lines: []string{"[2026-11-25 03:42:36 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:91)",
			"[2026-11-25 03:42:37 +0000] [1] [ERROR] Worker (pid:91) was sent SIGKILL! Perhaps out of memory?"},
		PythonStack: []string{"gunicorn/workers/sync.py:135 in handle", "app.py:12 in app", "orders.py:88 in load_report", "psycopg2/extras.py:236 in execute"},
		StackThread: "MainThread", StackTop: "orders.py:88 in load_report"}
	deep := &probes.Deep{Time: t0.Add(-15 * time.Second), PSS: 150 * mb, USS: 140 * mb, Wchan: "sk_wait_data", Syscall: "recvfrom", OpenFiles: 9,
		Sockets: []probes.Socket{{Proto: "tcp", Local: "0.0.0.0:8000", State: "LISTEN", Inode: 1},
			{Proto: "tcp", Local: "10.0.0.2:41000", Remote: "10.0.0.5:5432", State: "ESTABLISHED", Inode: 2}}}
	return Evidence{Incident: inc, Settings: s, Timeline: tl, Deep: deep, Container: cg, Platform: "kubernetes",
		Saturation: &Saturation{AllWorkersBusy: true, QueueMax: 12, QueueRose: true, Backlog: 2048}}
}

func goldenReport() Report {
	e := goldenEvidence()
	r := NewReport(e, Classify(e, DefaultThresholds()), "23.0.0", t0.Add(4*time.Second))
	r.Host = Host{Hostname: "web-1", GwrapVersion: "0.1.0"}
	return r
}

// TestGoldenReport: the report's JSON, as the store writes it, is the checked-in file
// (go test ./postmortem -run TestGoldenReport -update rewrites it after a deliberate change).
func TestGoldenReport(t *testing.T) {
	r := goldenReport()
	dir := t.TempDir()
	path, err := NewStore(dir, Retention{MaxCount: 10}).Write(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "golden", "report.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			if i >= len(gl) || i >= len(wl) || gl[i] != wl[i] {
				t.Fatalf("report differs from %s at line %d:\n got: %s\nwant: %s\n(run with -update after a deliberate change)", golden, i+1, at(gl, i), at(wl, i))
			}
		}
	}
	// The file reads back into the same report.
	var back Report
	if err := json.Unmarshal(want, &back); err != nil {
		t.Fatal(err)
	}
	again, _ := json.MarshalIndent(back, "", "  ")
	if !bytes.Equal(append(again, '\n'), want) {
		t.Error("the golden report does not survive a round trip")
	}
}

func at(ls []string, i int) string {
	if i < len(ls) {
		return ls[i]
	}
	return "(end)"
}

// TestReportContract: the fields the report's contract (schema gwrap.postmortem/v1) promises, and null (never 0) for every
// value that could not be read.
func TestReportContract(t *testing.T) {
	js, err := json.Marshal(goldenReport())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (any, bool) {
		var cur any = m
		for _, k := range strings.Split(path, ".") {
			obj, ok := cur.(map[string]any)
			if !ok {
				return nil, false
			}
			if cur, ok = obj[k]; !ok {
				return nil, false
			}
		}
		return cur, true
	}
	for _, f := range []string{"schema", "incident.kind", "incident.pid", "incident.at", "incident.python_stack", "verdict.cause",
		"verdict.near_memory_limit", "verdict.ran_long", "verdict.summary", "verdict.evidence", "verdict.advice", "timeline",
		"container.usage_bytes", "container.working_set_bytes", "container.limit_bytes", "container.oom_kill",
		"gunicorn.timeout", "gunicorn.workers", "gunicorn.worker_class"} {
		if v, ok := get(f); !ok || v == nil {
			t.Errorf("%s missing", f)
		}
	}
	if v, _ := get("schema"); v != Schema {
		t.Errorf("schema %v", v)
	}
	tl := m["timeline"].([]any)
	point := func(i int) map[string]any { return tl[i].(map[string]any) }
	if p := point(0); p["cpu_percent"] != nil || p["run_delay_pct"] != nil || p["rss_bytes"] == nil {
		t.Errorf("first sample: cpu %v run delay %v (want null: no rate yet), rss %v", p["cpu_percent"], p["run_delay_pct"], p["rss_bytes"])
	}
	if p := point(20); p["rss_bytes"] != nil || p["anon_bytes"] != nil || p["swap_bytes"] != nil || p["cpu_percent"] == nil {
		t.Errorf("sample with unreadable status: %v", p)
	}
	c := m["container"].(map[string]any)
	if c["oom_kill_before"] != nil || c["oom_kill"] != float64(0) {
		t.Errorf("oom_kill before %v (want null: unreadable at the start), after %v", c["oom_kill_before"], c["oom_kill"])
	}
	if s := c["samples"].([]any)[10].(map[string]any); s["working_set_bytes"] != nil || s["usage_bytes"] != nil {
		t.Errorf("unreadable cgroup sample: %v", s)
	}
	// The container as the worker died, not after: 440 MiB, not the 140 MiB after the incident.
	if ws := c["working_set_bytes"]; ws != float64(440*mb) {
		t.Errorf("working set %v, want the last sample before the incident", ws)
	}
	if pk := c["working_set_peak_bytes"]; pk != float64(440*mb) {
		t.Errorf("working set peak %v", pk)
	}
	if d := m["deep"].(map[string]any); d["waiting_on"].([]any)[0] != "tcp 10.0.0.5:5432" {
		t.Errorf("deep %v", d)
	}
	v := goldenReport().Verdict
	want := "Worker 91 simply ran long waiting on tcp 10.0.0.5:5432 in `orders.py:88 in load_report` (3% CPU, sleeping 100%), longer than the 30.0 s timeout"
	if v.Cause != CauseBlocked || !strings.HasPrefix(v.Summary, want) || !strings.Contains(v.Summary, "may have waited in the queue") ||
		!strings.Contains(v.Summary, "grew from 65.0 MiB to 221.0 MiB in 39 s") || strings.Contains(v.Summary, "20.0 MiB") {
		t.Errorf("%s: %s", v.Cause, v.Summary)
	}
}

// TestChartsLeaveGaps: an unreadable value breaks the line instead of dropping it to zero, and a
// series with no value at all draws nothing.
func TestChartsLeaveGaps(t *testing.T) {
	r := goldenReport()
	cs := charts(r)
	mem := cs[0].SVG()
	// worker RSS: one gap (sample 20) → two lines; working set: a gap at 10 → two; limit: one.
	if n := strings.Count(string(mem), "<polyline"); n != 5 {
		t.Errorf("memory chart has %d polylines, want 5 (RSS and working set broken by a gap, the limit whole)", n)
	}
	for _, y := range cs[0].Lines[0].Y {
		if y == 0 {
			t.Error("an unreadable RSS is charted as 0")
		}
	}
	cpu := cs[1].SVG() // CPU and run queue both start after the first sample
	if n := strings.Count(string(cpu), "<polyline"); n != 2 {
		t.Errorf("cpu chart has %d polylines, want 2", n)
	}
	if got := runs([]float64{nan(), 1, 2, nan(), nan(), 3}, 6); len(got) != 2 || got[0] != [2]int{1, 3} || got[1] != [2]int{5, 6} {
		t.Errorf("runs %v", got)
	}
	if got := runs([]float64{nan(), nan()}, 2); len(got) != 0 {
		t.Errorf("runs of nothing %v", got)
	}
	var h bytes.Buffer
	if err := WriteHTML(&h, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.String(), "Python stack (thread MainThread), innermost last") || !strings.Contains(h.String(), "orders.py:88 in load_report\npsycopg2/extras.py:236 in execute") {
		t.Error("the page does not show the Python stack")
	}
	var txt bytes.Buffer
	if err := WriteText(&txt, r); err != nil || !strings.Contains(txt.String(), "  psycopg2/extras.py:236 in execute\n") {
		t.Errorf("the text does not show the Python stack: %v", err)
	}
}

func nan() float64 { var z float64; return z / z }

// TestDeepSampleUnknownIsNull: a deep sample that could not read smaps_rollup or the fd table
// reports null PSS, USS and open files, not 0.
func TestDeepSampleUnknownIsNull(t *testing.T) {
	d := deepSample(probes.Deep{Wchan: "ep_poll", Missing: []string{"smaps_rollup", "fd"}})
	js, _ := json.Marshal(d)
	for _, want := range []string{`"pss":null`, `"uss":null`, `"open_files":null`, `"waiting_on":["wchan ep_poll"]`, `"sockets":[]`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("%s lacks %s", js, want)
		}
	}
	d = deepSample(probes.Deep{PSS: 0, USS: 0, OpenFiles: 0})
	if d.PSS == nil || *d.PSS != 0 || d.OpenFiles == nil {
		t.Errorf("a read 0 is not null: %+v", d)
	}
}
