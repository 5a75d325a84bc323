package postmortem

import (
	"bufio"
	"os"
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

// TestCorrelateRealLogs: the real 22.0 and 20.1 runs give one incident per dead worker, and
// none for the workers a HUP replaced or TERM stopped.
func TestCorrelateRealLogs(t *testing.T) {
	for _, tc := range []struct {
		log  string
		want []got
	}{
		{"../gunicorn/testdata/logs/gunicorn-22.0.0-sync.log", []got{{3681, KindTimeout, CauseUnknown}, {3682, KindSignal, CauseUnknown}, {3688, KindExit, CauseCrashed}, {3690, KindSignal, CauseCrashed}}},
		{"../gunicorn/testdata/logs/gunicorn-20.1.0-sync.log", []got{{3724, KindTimeout, CauseUnknown}, {3723, KindSignal, CauseUnknown}, {3730, KindSignal, CauseCrashed}}},
	} {
		t.Run(tc.log, func(t *testing.T) {
			c := NewCorrelator(gunicorn.Defaults(), DefaultThresholds(), Sources{})
			// A timeout waits for its worker to vanish, so reports may come out of order.
			rs := summarize(feed(t, c, readLines(t, tc.log), nil))
			sort.Slice(rs, func(i, j int) bool { return rs[i].pid < rs[j].pid })
			sort.Slice(tc.want, func(i, j int) bool { return tc.want[i].pid < tc.want[j].pid })
			if len(rs) != len(tc.want) {
				t.Fatalf("incidents %+v, want %+v", rs, tc.want)
			}
			for i := range rs {
				if rs[i] != tc.want[i] {
					t.Errorf("incident %d: %+v, want %+v", i, rs[i], tc.want[i])
				}
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
