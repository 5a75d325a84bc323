package postmortem

import (
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

var t0 = time.Date(2026, 11, 25, 3, 42, 36, 0, time.UTC)

// silence builds a worker timeline: n samples a second apart up to t0, heartbeat age rising from
// 0, each with the given CPU percent and state.
func silence(n int, cpu float64, state string, rss uint64) []probes.Sample {
	var out []probes.Sample
	for i := 0; i < n; i++ {
		out = append(out, probes.Sample{Time: t0.Add(time.Duration(i-n+1) * time.Second), CPUUser: cpu, State: state,
			RSSAnon: rss, HeartbeatAge: time.Duration(i) * time.Second, Heartbeats: true})
	}
	return out
}

// cgroup builds container samples over the same seconds.
func cgroup(n int, ws, limit uint64, throttledPerSec uint64, psi float64) []memwatch.Stats {
	var out []memwatch.Stats
	for i := 0; i < n; i++ {
		st := memwatch.Stats{Time: t0.Add(time.Duration(i-n+1) * time.Second), Version: 1,
			Usage: memwatch.Value{V: ws, Known: true}, WorkingSet: memwatch.Value{V: ws, Known: true},
			CPUThrottled: memwatch.Value{V: uint64(i) * throttledPerSec, Known: true}}
		if limit > 0 {
			st.Limit = memwatch.Value{V: limit, Known: true}
		}
		if psi > 0 {
			st.PSI = memwatch.PSI{MemorySome10: psi, Known: true}
		}
		if throttledPerSec > 0 {
			st.CPUQuotaCores = 0.05
		}
		out = append(out, st)
	}
	return out
}

func TestClassify(t *testing.T) {
	settings := gunicorn.Defaults()
	settings.Timeout = 10
	const mb = 1 << 20
	timeout := Incident{Kind: KindTimeout, PID: 7, At: t0, Timeout: true, Vanished: true}
	escalated := timeout
	escalated.Escalated, escalated.Signal, escalated.OOMHint = true, "SIGKILL", true
	oom := Incident{Kind: KindSignal, PID: 7, At: t0, Signal: "SIGKILL", OOMHint: true, OOMKillDelta: 1, Vanished: true}
	segv := Incident{Kind: KindSignal, PID: 7, At: t0, Signal: "SIGSEGV"}
	kill := Incident{Kind: KindSignal, PID: 7, At: t0, Signal: "SIGKILL", OOMHint: true}
	code := 7
	exit := Incident{Kind: KindExit, PID: 7, At: t0, ExitCode: &code}
	stuck := Incident{Kind: KindTimeout, PID: 7, At: t0, BootStuck: true}
	neverBeat := silence(11, 2, "S", 50*mb)
	for i := range neverBeat {
		neverBeat[i].Heartbeats = false
	}
	deep := &probes.Deep{Sockets: []probes.Socket{{Proto: "tcp", Local: "127.0.0.1:8000", State: "LISTEN"},
		{Proto: "tcp", Local: "10.0.0.2:41000", Remote: "10.0.0.5:5432", State: "ESTABLISHED"}}, Wchan: "sk_wait_data"}

	for _, tc := range []struct {
		name       string
		e          Evidence
		cause      Cause
		near, long bool
		says       string
	}{
		{"sleep → blocked", Evidence{Incident: timeout, Timeline: silence(11, 1, "S", 50*mb), Container: cgroup(11, 100*mb, 1000*mb, 0, 0)}, CauseBlocked, false, true, "waiting"},
		{"db call → blocked naming the peer", Evidence{Incident: timeout, Timeline: silence(11, 1, "S", 50*mb), Deep: deep}, CauseBlocked, false, true, "tcp 10.0.0.5:5432"},
		{"spin → cpu_bound", Evidence{Incident: timeout, Timeline: silence(11, 99, "R", 50*mb), Container: cgroup(11, 100*mb, 1000*mb, 0, 0)}, CauseCPUBound, false, true, "computing"},
		{"cpu at the threshold → cpu_bound", Evidence{Incident: timeout, Timeline: silence(11, 70, "R", 50*mb)}, CauseCPUBound, false, true, ""},
		{"cpu just below → blocked", Evidence{Incident: timeout, Timeline: silence(11, 69, "S", 50*mb)}, CauseBlocked, false, true, ""},
		{"near the limit → memory_pressure", Evidence{Incident: timeout, Timeline: silence(11, 30, "S", 900*mb), Container: cgroup(11, 950*mb, 1000*mb, 0, 0)}, CauseMemoryPressure, true, true, "near its memory limit"},
		{"at 90% exactly → near", Evidence{Incident: timeout, Timeline: silence(11, 5, "S", 900*mb), Container: cgroup(11, 900*mb, 1000*mb, 0, 0)}, CauseMemoryPressure, true, true, ""},
		{"at 89% → not near", Evidence{Incident: timeout, Timeline: silence(11, 5, "S", 890*mb), Container: cgroup(11, 890*mb, 1000*mb, 0, 0)}, CauseBlocked, false, true, ""},
		{"container PSI high → memory_pressure", Evidence{Incident: timeout, Timeline: silence(11, 5, "S", 100*mb), Container: cgroup(11, 500*mb, 1000*mb, 0, 25)}, CauseMemoryPressure, false, true, ""},
		{"throttled → cpu_starved", Evidence{Incident: timeout, Timeline: silence(11, 5, "R", 50*mb), Container: cgroup(11, 100*mb, 0, 10, 0)}, CauseCPUStarved, false, true, "quota"},
		{"run delay → cpu_starved", Evidence{Incident: timeout, Timeline: func() []probes.Sample {
			s := silence(11, 30, "R", 50*mb)
			for i := range s {
				s[i].RunDelayPct = 60
			}
			return s
		}()}, CauseCPUStarved, false, true, ""},
		{"oom kill", Evidence{Incident: oom, Timeline: silence(3, 50, "R", 990*mb), Container: cgroup(3, 999*mb, 1000*mb, 0, 0)}, CauseOOMKilled, true, false, "OOM killer"},
		{"oom kill missed by the samples is still at the limit", Evidence{Incident: oom, Timeline: silence(3, 50, "R", 40*mb), Container: cgroup(3, 41*mb, 200*mb, 0, 0)}, CauseOOMKilled, true, false, "OOM killer"},
		{"escalation is not an OOM", Evidence{Incident: escalated, Timeline: silence(11, 99, "R", 50*mb)}, CauseCPUBound, false, true, "not an OOM kill"},
		{"boot stuck (≥22)", Evidence{Incident: stuck, Timeline: neverBeat}, CauseBootTimeout, false, true, "never finished booting"},
		{"timeout of a worker that never beat (≤21)", Evidence{Incident: timeout, Timeline: neverBeat}, CauseBootTimeout, false, true, ""},
		{"segv → crashed", Evidence{Incident: segv, Timeline: silence(3, 10, "S", 50*mb)}, CauseCrashed, false, false, "SIGSEGV"},
		{"sigkill without oom → crashed, low", Evidence{Incident: kill}, CauseCrashed, false, false, "without the cgroup's OOM killer"},
		{"exit code → crashed", Evidence{Incident: exit}, CauseCrashed, false, false, "code 7"},
		{"no samples → unknown", Evidence{Incident: timeout}, CauseUnknown, false, true, "no samples"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.e.Settings = settings
			v := Classify(tc.e, DefaultThresholds())
			if v.Cause != tc.cause || v.NearMemoryLimit != tc.near || v.RanLong != tc.long {
				t.Errorf("cause %s near %v long %v, want %s %v %v\n%s", v.Cause, v.NearMemoryLimit, v.RanLong, tc.cause, tc.near, tc.long, v.Summary)
			}
			if !strings.Contains(v.Summary+strings.Join(v.Advice, " "), tc.says) {
				t.Errorf("summary %q does not say %q", v.Summary, tc.says)
			}
			if v.Summary == "" || v.Confidence == "" || len(v.Advice) == 0 && v.Cause != CauseUnknown {
				t.Errorf("incomplete verdict %+v", v)
			}
			if again := Classify(tc.e, DefaultThresholds()); again.Summary != v.Summary {
				t.Error("Classify is not deterministic")
			}
		})
	}
}

func TestRanLongThreshold(t *testing.T) {
	s := gunicorn.Defaults()
	s.Timeout = 10
	inc := Incident{Kind: KindSignal, PID: 7, At: t0, Signal: "SIGSEGV"}
	if v := Classify(Evidence{Incident: inc, Settings: s, Timeline: silence(6, 1, "S", 1)}, DefaultThresholds()); !v.RanLong {
		t.Error("silent 5 s of a 10 s timeout ran long (share 0.5)")
	}
	if v := Classify(Evidence{Incident: inc, Settings: s, Timeline: silence(5, 1, "S", 1)}, DefaultThresholds()); v.RanLong {
		t.Error("silent 4 s of 10 s did not run long")
	}
}
