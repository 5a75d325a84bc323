package postmortem

import (
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

const mb = 1 << 20

func known(v uint64) memwatch.Value { return memwatch.Value{V: v, Known: true} }

// TestFactsComeFromBeforeTheDeath: the worker's peak RSS over the silence, not the exiting
// process's last sample nor its zombie; the container's peak working set up to the death, not
// the freed memory after it.
func TestFactsComeFromBeforeTheDeath(t *testing.T) {
	s := gunicorn.Defaults()
	s.Timeout = 10
	tl := silence(11, 1, "S", 357*mb)
	tl[3].RSSAnon = 300 * mb
	tl = append(tl,
		probes.Sample{Time: t0.Add(-500 * time.Millisecond), State: "Z", HeartbeatAge: 11 * time.Second, Heartbeats: true},        // reaped soon
		probes.Sample{Time: t0, State: "R", RSSAnon: 25 * mb, HeartbeatAge: 11 * time.Second, Heartbeats: true},                   // exiting
		probes.Sample{Time: t0.Add(time.Second), State: "R", RSSAnon: 900 * mb, HeartbeatAge: 30 * time.Second, Heartbeats: true}, // pid reused
	)
	cg := cgroup(11, 380*mb, 400*mb, 0, 0)
	cg[5].WorkingSet = known(390 * mb)
	after := memwatch.Stats{Time: t0.Add(time.Second), Version: 1, Usage: known(23 * mb), WorkingSet: known(22 * mb), Limit: known(400 * mb), OOMKill: known(4)}
	cg = append(cg, after)
	inc := Incident{Kind: KindTimeout, PID: 7, At: t0, Timeout: true, Vanished: true}
	e := Evidence{Incident: inc, Settings: s, Timeline: tl, Container: cg}
	f := measure(e)
	if !f.RSSKnown || f.PeakRSS != 357*mb || f.Samples != 11 || f.Silence != 10*time.Second {
		t.Errorf("worker: peak %s known %v, %d samples, silence %v", mib(f.PeakRSS), f.RSSKnown, f.Samples, f.Silence)
	}
	if !f.WSKnown || f.WSPeak != 390*mb || f.Limit != 400*mb {
		t.Errorf("container: ws peak %s of %s", mib(f.WSPeak), mib(f.Limit))
	}
	v := Classify(e, DefaultThresholds())
	all := v.Summary + fmtFacts(v.Evidence)
	if v.Cause != CauseMemoryPressure || !v.NearMemoryLimit || !strings.Contains(all, "357.0 MiB") || !strings.Contains(all, "390.0 MiB of 400.0 MiB") {
		t.Errorf("%s near %v: %s", v.Cause, v.NearMemoryLimit, all)
	}
	for _, after := range []string{"25.0 MiB", "22.0 MiB", "900.0 MiB"} {
		if strings.Contains(all, after) {
			t.Errorf("quotes %s, a figure from after the death: %s", after, all)
		}
	}

	// The same death as an OOM kill: the summary says the limit was reached and quotes the
	// peak before the kill, and the kernel's recorded peak when the cgroup has one.
	e.Incident = Incident{Kind: KindOOMKill, PID: 7, At: t0, Signal: "SIGKILL", OOMHint: true, OOMKillDelta: 1, Vanished: true}
	v = Classify(e, DefaultThresholds())
	if v.Cause != CauseOOMKilled || !strings.Contains(v.Summary, "reached its 400.0 MiB memory limit") || !strings.Contains(v.Summary, "390.0 MiB") ||
		strings.Contains(v.Summary, "recorded peak") || strings.Contains(v.Summary, "22.0 MiB") {
		t.Errorf("oom summary: %s", v.Summary)
	}
	for i := range e.Container {
		e.Container[i].Peak = known(400 * mb)
	}
	v = Classify(e, DefaultThresholds())
	if !strings.Contains(v.Summary, "the cgroup's recorded peak 400.0 MiB") || !strings.Contains(fmtFacts(v.Evidence), "recorded peak usage (kernel): 400.0 MiB (100% of the limit)") {
		t.Errorf("oom summary without the recorded peak: %s\n%s", v.Summary, fmtFacts(v.Evidence))
	}
}

// TestFactsUnknownIsNotZero: a sample whose status was unreadable gives no RSS; a first sample
// (no rates yet) gives no CPU.
func TestFactsUnknownIsNotZero(t *testing.T) {
	s := gunicorn.Defaults()
	s.Timeout = 10
	tl := with(silence(5, 90, "R", 0), func(x *probes.Sample) { x.Missing = []string{"status"} })
	tl[0].NoRates, tl[0].CPUUser = true, 0
	f := measure(Evidence{Incident: Incident{Kind: KindTimeout, PID: 7, At: t0, Timeout: true}, Settings: s, Timeline: tl})
	if f.RSSKnown || f.CPU != 90 || !f.CPUKnown {
		t.Errorf("rss known %v, cpu %v", f.RSSKnown, f.CPU)
	}
	v := Classify(Evidence{Incident: Incident{Kind: KindTimeout, PID: 7, At: t0, Timeout: true}, Settings: s, Timeline: tl}, DefaultThresholds())
	if strings.Contains(fmtFacts(v.Evidence), "resident memory") {
		t.Errorf("an unreadable RSS is quoted: %s", fmtFacts(v.Evidence))
	}
	one := silence(1, 0, "S", mb)
	one[0].NoRates = true
	f = measure(Evidence{Incident: Incident{Kind: KindTimeout, PID: 7, At: t0, Timeout: true}, Settings: s, Timeline: one})
	if f.CPUKnown {
		t.Error("a lone first sample has a CPU figure")
	}
}

// TestGrowth: a worker's memory that grew markedly is stated; a steady rise reads as a leak.
func TestGrowth(t *testing.T) {
	ramp := func(n int, step time.Duration, rss func(i int) uint64) []probes.Sample {
		var out []probes.Sample
		for i := 0; i < n; i++ {
			out = append(out, probes.Sample{Time: t0.Add(-time.Duration(n-i) * step), State: "S", RSSAnon: rss(i), Heartbeats: true})
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		tl     []probes.Sample
		want   *Growth
		leak   bool
		phrase string
	}{
		{"leak 65 → 266 MiB in 9 minutes", ramp(10, time.Minute, func(i int) uint64 { return uint64(65+i*201/9) * mb }), &Growth{From: 65 * mb, To: 266 * mb, Over: 9 * time.Minute, Steady: true}, true, "grew from 65.0 MiB to 266.0 MiB in 9 minutes"},
		{"sawtooth", ramp(10, time.Minute, func(i int) uint64 { return uint64(65+[]int{0, 150, 10, 160, 5, 200, 0, 150, 20, 150}[i]) * mb }), &Growth{From: 65 * mb, To: 265 * mb, Over: 5 * time.Minute, Steady: false}, false, "grew from 65.0 MiB to 265.0 MiB in 5 minutes"},
		// Idle at 36 MiB, then one request grows it over two samples: it grew in 2 s, not in
		// the 5 s since the first sample.
		{"idle, then a 2 s request", ramp(6, time.Second, func(i int) uint64 { return []uint64{36, 36, 37, 36, 100, 158}[i] * mb }), &Growth{From: 36 * mb, To: 158 * mb, Over: 2 * time.Second, Steady: true}, true, "grew from 36.0 MiB to 158.0 MiB in 2 s"},
		{"+63 MiB is not marked", ramp(10, time.Minute, func(i int) uint64 { return uint64(65+i*7) * mb }), nil, false, ""},
		{"+100 MiB on 300 is not half", ramp(10, time.Minute, func(i int) uint64 { return uint64(300+i*11) * mb }), nil, false, ""},
		{"two samples say nothing", ramp(2, time.Minute, func(i int) uint64 { return uint64(65+i*300) * mb }), nil, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := growth(tc.tl)
			if (g == nil) != (tc.want == nil) || g != nil && *g != *tc.want {
				t.Fatalf("growth %+v, want %+v", g, tc.want)
			}
			s := gunicorn.Defaults()
			v := Classify(Evidence{Incident: Incident{Kind: KindOOMKill, PID: 7, At: t0, OOMKillDelta: 1}, Settings: s, Timeline: tc.tl, Container: cgroup(3, 100*mb, 500*mb, 0, 0)}, DefaultThresholds())
			if !strings.Contains(v.Summary, tc.phrase) || (tc.phrase == "") != !strings.Contains(v.Summary, "grew") {
				t.Errorf("summary %q, want %q", v.Summary, tc.phrase)
			}
			if leak := strings.Contains(strings.Join(v.Advice, "\n"), "looks like a leak: recycle workers with --max-requests 1000"); leak != tc.leak {
				t.Errorf("leak advice %v: %q", leak, v.Advice)
			}
		})
	}
}

func fmtFacts(fs []Fact) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("\n" + f.Fact + ": " + f.Value)
	}
	return b.String()
}

// TestFactsOfABusyWorkerKilledMidRequest: a worker that beat until it was OOM-killed (silence
// under a second) is still measured over its last seconds: the limit and the peaks are quoted.
func TestFactsOfABusyWorkerKilledMidRequest(t *testing.T) {
	s := gunicorn.Defaults()
	tl := with(silence(10, 80, "R", 0), func(x *probes.Sample) { x.HeartbeatAge = 300 * time.Millisecond })
	for i := range tl {
		tl[i].RSSAnon = uint64(100+25*i) * mb
	}
	cg := cgroup(10, 0, 400*mb, 0, 0)
	for i := range cg {
		cg[i].Time = cg[i].Time.Add(-1500 * time.Millisecond) // the cgroup sampled off the worker's beat
		cg[i].WorkingSet = known(uint64(150+25*i) * mb)
	}
	e := Evidence{Incident: Incident{Kind: KindOOMKill, PID: 7, At: t0, Signal: "SIGKILL", OOMKillDelta: 1}, Settings: s, Timeline: tl, Container: cg}
	f := measure(e)
	if f.PeakRSS != 325*mb || !f.WSKnown || f.WSPeak != 375*mb || f.Limit != 400*mb || !f.HaveCgroup {
		t.Errorf("peak rss %s, ws %s (known %v) of %s", mib(f.PeakRSS), mib(f.WSPeak), f.WSKnown, mib(f.Limit))
	}
	v := Classify(e, DefaultThresholds())
	if !strings.Contains(v.Summary, "reached its 400.0 MiB memory limit (working set up to 375.0 MiB") || !strings.Contains(v.Summary, "the worker held up to 325.0 MiB") || len(v.Missing) != 0 {
		t.Errorf("%s\nmissing %v", v.Summary, v.Missing)
	}
}

// TestIdleStartOfTheSilenceIsNotTheRequest: a sync worker beats, waits idle in select for 14 s,
// then a request computes for 16 s until the 30 s timeout: the verdict is cpu_bound, judged on
// the second half of the silence, not diluted by the idle wait that began it.
func TestIdleStartOfTheSilenceIsNotTheRequest(t *testing.T) {
	tl := silence(31, 99, "R", 50*mb)
	for i := 0; i < 14; i++ {
		tl[i].CPUUser, tl[i].State = 0, "S"
	}
	e := Evidence{Incident: Incident{Kind: KindTimeout, PID: 9, At: t0.Add(time.Second), Timeout: true}, Settings: gunicorn.Defaults(), Timeline: tl}
	if v := Classify(e, DefaultThresholds()); v.Cause != CauseCPUBound {
		t.Errorf("%s: %s", v.Cause, v.Summary)
	}
}

// TestOOMSummaryQuotesOnlyWhatWasSampled: an OOM kill happens when the container's usage
// reaches the limit. When the samples' working set fell short of it by more than a tenth of
// what the worker held, the allocation that led to the kill came after the last sample: the
// summary says the last moments were not sampled instead of passing the sampled figure off as
// the worker's peak (in a real 256 MiB container the samples saw 152 MiB; the kernel killed it
// at 251 MiB).
func TestOOMSummaryQuotesOnlyWhatWasSampled(t *testing.T) {
	oom := func(rss, ws uint64, workerSamples bool) string {
		var tl []probes.Sample
		if workerSamples {
			tl = with(silence(5, 90, "R", rss), func(x *probes.Sample) { x.HeartbeatAge = 200 * time.Millisecond })
		}
		cg := cgroup(5, ws, 256*mb, 0, 0)
		for i := range cg {
			cg[i].Peak = known(256 * mb)
		}
		e := Evidence{Incident: Incident{Kind: KindOOMKill, PID: 15, At: t0, Signal: "SIGKILL", OOMKillDelta: 1}, Settings: gunicorn.Defaults(), Timeline: tl, Container: cg}
		return Classify(e, DefaultThresholds()).Summary
	}
	for _, tc := range []struct {
		name          string
		rss, ws       uint64
		workerSamples bool
		want, notWant string
	}{
		{"the samples saw it reach the limit", 240 * mb, 250 * mb, true, "; the worker held up to 240.0 MiB before the kill.", "not sampled"},
		{"the samples missed the last 98 MiB", 152 * mb, 158 * mb, true,
			"; the worker held up to 152.0 MiB in its samples, but its last moments before the kill were not sampled: the container grew 98.0 MiB more to reach its limit.", "before the kill."},
		{"the worker was never sampled", 0, 4 * mb, false, "; the worker's last moments before the kill were not sampled.", "held up to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := oom(tc.rss, tc.ws, tc.workerSamples)
			if !strings.Contains(s, tc.want) || strings.Contains(s, tc.notWant) {
				t.Errorf("summary %q\nwant %q, not %q", s, tc.want, tc.notWant)
			}
		})
	}
}
