package flightrec

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// mustRecover kills r as a SIGKILL would and explains its record.
func mustRecover(t *testing.T, r *Recorder, dir string, c *clock) postmortem.Report {
	t.Helper()
	r.crash()
	rep, err := Recover(dir, "web-1", c.add(20*time.Second), postmortem.DefaultThresholds())
	if err != nil || rep == nil {
		t.Fatalf("Recover: %v, %v", rep, err)
	}
	if rep.Incident.Kind != postmortem.KindPreviousRun || rep.Schema != postmortem.Schema {
		t.Errorf("kind %q schema %q", rep.Incident.Kind, rep.Schema)
	}
	return *rep
}

func TestExplainGroupOOMAtTheLimit(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	r := newRec(t, dir, "web-1", c, 0)
	run(r, c, 100, true) // worker 101 grows to 451 MiB resident, the container to 496 of 512 MiB
	rep := mustRecover(t, r, dir, c)
	v := rep.Verdict
	if v.Cause != postmortem.CauseOOMKilled || !v.NearMemoryLimit {
		t.Fatalf("cause %s near %v: %s", v.Cause, v.NearMemoryLimit, v.Summary)
	}
	if rep.Incident.PID != 101 || !strings.Contains(v.Summary, "worker was 101 with 451.0 MiB") {
		t.Errorf("the largest worker is not named: pid %d, %s", rep.Incident.PID, v.Summary)
	}
	if !strings.Contains(v.Summary, "memory.oom.group") {
		t.Errorf("summary does not say why: %s", v.Summary)
	}
	// The timeline shows the growth towards the limit.
	tl := rep.Timeline
	if len(tl) != 100 || tl[0].RSSBytes == nil || tl[len(tl)-1].RSSBytes == nil || *tl[0].RSSBytes >= *tl[len(tl)-1].RSSBytes {
		t.Errorf("timeline of %d points does not grow: %+v … %+v", len(tl), tl[0], tl[len(tl)-1])
	}
	cs := rep.Container.Samples
	if len(cs) != 100 || *rep.Container.LimitBytes != 512*MiB || cs[99].WorkingSetBytes == nil || *cs[99].WorkingSetBytes != 496*MiB {
		t.Errorf("container samples %d, last %+v", len(cs), cs[len(cs)-1])
	}
	if !rep.Incident.At.Equal(t0.Add(100 * time.Second)) {
		t.Errorf("incident at %v, want the last record", rep.Incident.At)
	}
	facts := factText(v)
	for _, want := range []string{"worker 101's last sample", "worker 102's last sample", "496.0 MiB of 512.0 MiB", "20.0 s later"} {
		if !strings.Contains(facts, want) {
			t.Errorf("evidence lacks %q:\n%s", want, facts)
		}
	}
}

func TestExplainOOMCounterMovingAtTheEnd(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	r := newRec(t, dir, "web-1", c, 0)
	for i := 0; i < 30; i++ { // no oom.group (v1), far from the limit, but the counter moves
		r.Container(cg(c.add(time.Second), 200*MiB, uint64(i/28), false))
	}
	rep := mustRecover(t, r, dir, c)
	if rep.Verdict.Cause != postmortem.CauseOOMKilled || rep.Incident.OOMKillDelta != 1 {
		t.Errorf("cause %s delta %d: %s", rep.Verdict.Cause, rep.Incident.OOMKillDelta, rep.Verdict.Summary)
	}
}

func TestExplainAnOldOOMIsNotTheEnd(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	r := newRec(t, dir, "web-1", c, 0)
	for i := 0; i < 60; i++ { // one OOM kill a minute before the end: gwrap reported it itself
		r.Container(cg(c.add(time.Second), 200*MiB, uint64(min(i, 1)), false))
	}
	r.OOM(memwatch.OOMEvent{Time: t0.Add(2 * time.Second), Count: 1, Total: 1})
	if rep := mustRecover(t, r, dir, c); rep.Verdict.Cause != postmortem.CauseUnknown {
		t.Errorf("cause %s: %s", rep.Verdict.Cause, rep.Verdict.Summary)
	}
}

func TestExplainKilledAfterTERM(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	r := newRec(t, dir, "web-1", c, 0)
	run(r, c, 5, false)
	r.Signal(syscall.SIGTERM, true)
	run(r, c, 10, false)
	rep := mustRecover(t, r, dir, c)
	v := rep.Verdict
	if v.Cause != postmortem.CauseUnknown || !strings.Contains(v.Summary, "killed while stopping") {
		t.Fatalf("cause %s: %s", v.Cause, v.Summary)
	}
	if !strings.Contains(v.Summary, "SIGTERM") || !strings.Contains(v.Summary, "8.0 s") {
		t.Errorf("summary: %s", v.Summary)
	}
	if !strings.Contains(factText(v), "10.0 s before its last record") {
		t.Errorf("evidence: %s", factText(v))
	}
}

func TestExplainUnknownSaysWhatTheRecordShows(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	r := newRec(t, dir, "web-1", c, 0)
	run(r, c, 5, false)
	rep := mustRecover(t, r, dir, c)
	v := rep.Verdict
	if v.Cause != postmortem.CauseUnknown || v.Confidence != "low" {
		t.Fatalf("cause %s: %s", v.Cause, v.Summary)
	}
	if !strings.Contains(v.Summary, "2026-11-25T12:00:05Z") || !strings.Contains(v.Summary, "20.0 s later") || !strings.Contains(v.Summary, "pid 4242") {
		t.Errorf("summary does not give the last record's time and the gap: %s", v.Summary)
	}
}

func TestExplainEmptyRecord(t *testing.T) {
	// Killed before the first sample: only the header is there.
	dir, c := t.TempDir(), &clock{t0}
	r := newRec(t, dir, "web-1", c, 0)
	rep := mustRecover(t, r, dir, c)
	if rep.Verdict.Cause != postmortem.CauseUnknown || len(rep.Timeline) != 0 || rep.Incident.PID != 4242 {
		t.Errorf("cause %s, timeline %d, pid %d", rep.Verdict.Cause, len(rep.Timeline), rep.Incident.PID)
	}
	if len(rep.Verdict.Missing) == 0 {
		t.Error("nothing said missing")
	}
}

func factText(v postmortem.Verdict) string {
	var b strings.Builder
	for _, f := range v.Evidence {
		b.WriteString(f.Fact + ": " + f.Value + " (" + f.Threshold + ")\n")
	}
	return b.String()
}

// TestExplainGroupOOMRisingFast: with memory.oom.group set, the record ends with the working set
// rising fast but still under the limit (a request allocating faster than the 1 Hz samples, as
// in a 256 MiB podman container on cgroup v2) and no stop signal: the whole container was most
// likely OOM-killed, and the summary says the rise to the limit was not recorded. Without
// memory.oom.group, or with a stop signal, the same record is not an OOM kill.
func TestExplainGroupOOMRisingFast(t *testing.T) {
	record := func(group, term bool) postmortem.Report {
		dir, c := t.TempDir(), &clock{t0}
		r := newRec(t, dir, "web-1", c, 0)
		a := probes.ID{PID: 101, StartTime: 9}
		for i, ws := range []uint64{60, 60, 61, 60, 60, 60, 120, 260} {
			now := c.add(time.Second)
			r.Container(cg(now, ws*MiB, 0, group))
			r.Worker(a, worker(now, (ws-20)*MiB))
			if term && i == 5 {
				r.Signal(syscall.SIGTERM, true)
			}
		}
		return mustRecover(t, r, dir, c)
	}
	v := record(true, false).Verdict
	if v.Cause != postmortem.CauseOOMKilled || v.Confidence != "medium" ||
		!strings.Contains(v.Summary, "was most likely killed by the kernel's OOM killer") ||
		!strings.Contains(v.Summary, "up 200.0 MiB in 2.0 s to 260.0 MiB of its 512.0 MiB limit") ||
		!strings.Contains(v.Summary, "was not recorded") || !strings.Contains(v.Summary, "worker was 101 with 245.0 MiB") {
		t.Errorf("group, rising: %s %s: %s", v.Cause, v.Confidence, v.Summary)
	}
	if v := record(false, false).Verdict; v.Cause != postmortem.CauseUnknown {
		t.Errorf("no group: %s: %s", v.Cause, v.Summary)
	}
	if v := record(true, true).Verdict; v.Cause != postmortem.CauseUnknown || !strings.Contains(v.Summary, "killed while stopping") {
		t.Errorf("group, rising, after TERM: %s: %s", v.Cause, v.Summary)
	}
}

// TestExplainRedactsTheLinesItQuotes: the previous_run report quotes Gunicorn's last lines about
// workers' ends from the record, redacted as a live report's lines are (a worker's exit line can
// carry a traceback's text with credentials in it).
func TestExplainRedactsTheLinesItQuotes(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	r := newRec(t, dir, "web-1", c, 0)
	run(r, c, 5, false)
	for _, l := range []string{
		"[2026-11-25 12:00:05 +0000] [7] [ERROR] Worker (pid:101) exited with code 3: connect to postgres://app:hunter2@db:5432 failed",
		"[2026-11-25 12:00:05 +0000] [7] [ERROR] Worker (pid:102) exited with code 1: password=swordfish rejected",
	} {
		r.Gunicorn(gunicorn.ParseLine([]byte(l)))
	}
	rep := mustRecover(t, r, dir, c)
	text := strings.Join(rep.Incident.Lines, "\n")
	if len(rep.Incident.Lines) != 2 {
		t.Fatalf("lines %q", rep.Incident.Lines)
	}
	for _, secret := range []string{"hunter2", "swordfish"} {
		if strings.Contains(text, secret) {
			t.Errorf("the report quotes %q:\n%s", secret, text)
		}
	}
	if !strings.Contains(text, "[REDACTED]") || !strings.Contains(text, "Worker (pid:101)") {
		t.Errorf("lines not quoted redacted:\n%s", text)
	}
}

// TestExplainNamesTheRequestsInFlight: the requests the workers were serving at their last
// sample are in the previous run's post-mortem, aged to the record's last line; a worker that
// finished its request before the end names none, and a request planted with a control character
// or past the bounds is not taken.
func TestExplainNamesTheRequestsInFlight(t *testing.T) {
	dir, c := t.TempDir(), &clock{t0}
	r := newRec(t, dir, "web-1", c, 0)
	a, b := probes.ID{PID: 101, StartTime: 9}, probes.ID{PID: 102, StartTime: 10}
	sleep := postmortem.Request{Method: "GET", Path: "/sleep", Query: "token=…", Remote: "10.0.0.7", AgeSeconds: 1.5}
	for i := 0; i < 5; i++ {
		now := c.add(time.Second)
		r.Container(cg(now, 100*MiB, 0, false))
		sleep.AgeSeconds = float64(i) + 0.5
		r.Worker(a, worker(now, 50*MiB), sleep)
		if i < 4 {
			r.Worker(b, worker(now, 40*MiB), postmortem.Request{Method: "POST", Path: "/upload", AgeSeconds: 0.2})
		} else {
			r.Worker(b, worker(now, 40*MiB)) // its request ended
		}
	}
	c.add(2 * time.Second)
	r.Container(cg(c.now(), 100*MiB, 0, false)) // the record's last line, 2 s after the last worker sample
	rep := mustRecover(t, r, dir, c)
	if got := rep.Incident.Requests; len(got) != 1 || got[0].Method != "GET" || got[0].Path != "/sleep" || got[0].Query != "token=…" ||
		got[0].Remote != "10.0.0.7" || got[0].AgeSeconds != 6.5 {
		t.Errorf("incident.requests %+v, want GET /sleep?token=… from 10.0.0.7 running 6.5 s", got)
	}
	if want := "In flight at its last record: worker 101 was serving GET /sleep?token=… from 10.0.0.7, running 6.5 s."; !strings.Contains(rep.Verdict.Summary, want) {
		t.Errorf("summary %q does not say %q", rep.Verdict.Summary, want)
	}

	// Planted in the report dir: a line with control characters, invalid UTF-8, too many
	// requests and too long a path.
	dir, c = t.TempDir(), &clock{t0}
	r = newRec(t, dir, "web-1", c, 0)
	now := c.add(time.Second)
	r.Container(cg(now, 100*MiB, 0, false))
	r.crash()
	rq := []string{`{"m":"GET","p":"/a\u001b[2J","a":1000}`, `{"m":"GET","p":"/b\ufffd","a":1000}`}
	for i := 0; i < 40; i++ {
		rq = append(rq, `{"m":"GET","p":"/`+strings.Repeat("x", 5000)+`","a":1000}`)
	}
	planted := fmt.Sprintf(`{"k":"w","n":99999,"t":%d,"w":103,"ws0":11,"ra":1048576,"hb":-1,"rq":[%s]}`+"\n", now.UnixMilli(), strings.Join(rq, ","))
	f, err := os.OpenFile(segmentNames(dir, "web-1")[0], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(planted)
	f.Close()
	rep = mustRecover(t, r, dir, c)
	if n := len(rep.Incident.Requests); n != maxReqs-2 {
		t.Errorf("%d requests taken, want %d (the bound, less the two with control or replacement characters)", n, maxReqs-2)
	}
	for _, q := range rep.Incident.Requests {
		if len(q.Path) > maxPath || !printable(q.Path) {
			t.Errorf("a request taken as planted: %d bytes %q…", len(q.Path), q.Path[:min(len(q.Path), 20)])
		}
	}
}
