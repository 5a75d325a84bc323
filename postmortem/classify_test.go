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

// silence builds a worker timeline: n samples a second apart, the last one live a second before
// the incident at t0, heartbeat age rising from 0, each with the given CPU percent and state.
func silence(n int, cpu float64, state string, rss uint64) []probes.Sample {
	var out []probes.Sample
	for i := 0; i < n; i++ {
		out = append(out, probes.Sample{Time: t0.Add(time.Duration(i-n) * time.Second), CPUUser: cpu, State: state,
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
			CPUThrottled: memwatch.Value{V: uint64(i) * throttledPerSec, Known: true}, OOMKill: memwatch.Value{V: 3, Known: true}}
		if limit > 0 {
			st.Limit = memwatch.Value{V: limit, Known: true}
		}
		if psi > 0 {
			st.PSI = memwatch.PSI{MemorySome10: psi, Known: true}
		}
		if throttledPerSec > 0 {
			st.CPUQuota = memwatch.Cores{V: 0.05, Known: true}
		}
		out = append(out, st)
	}
	return out
}

// with returns samples changed by f.
func with(ss []probes.Sample, f func(*probes.Sample)) []probes.Sample {
	for i := range ss {
		f(&ss[i])
	}
	return ss
}

// hostPSI marks container samples' PSI as read host-wide (/proc/pressure).
func hostPSI(sts []memwatch.Stats) []memwatch.Stats {
	for i := range sts {
		sts[i].PSI.HostWide = true
	}
	return sts
}

func TestClassify(t *testing.T) {
	settings := gunicorn.Defaults()
	settings.Timeout = 10
	const mb = 1 << 20
	timeout := Incident{Kind: KindTimeout, PID: 7, At: t0, Timeout: true, Vanished: true}
	handled := timeout
	handled.HandledAbort, handled.OOMKillDelta = true, 1
	escalated := timeout
	escalated.Escalated, escalated.Signal, escalated.OOMHint = true, "SIGKILL", true
	escalatedOOM := escalated
	escalatedOOM.OOMKillDelta = 1
	oom := Incident{Kind: KindSignal, PID: 7, At: t0, Signal: "SIGKILL", OOMHint: true, OOMKillDelta: 1, Vanished: true}
	oomSilent := Incident{Kind: KindSignal, PID: 7, At: t0, OOMKillDelta: 2, Vanished: true} // ≤ 19.9 or --log-level critical
	segv := Incident{Kind: KindSignal, PID: 7, At: t0, Signal: "SIGSEGV"}
	kill := Incident{Kind: KindSignal, PID: 7, At: t0, Signal: "SIGKILL", OOMHint: true}
	gone := Incident{Kind: KindSignal, PID: 7, At: t0, Vanished: true}
	code, boot := 7, 3
	exit := Incident{Kind: KindExit, PID: 7, At: t0, ExitCode: &code}
	exitOOM := exit
	exitOOM.OOMKillDelta = 1
	bootFail := Incident{Kind: KindExit, PID: 7, At: t0, ExitCode: &boot, Traceback: []string{"Traceback (most recent call last):",
		`  File "/srv/app/app.py", line 1, in <module>`, "    import missing_module", "ModuleNotFoundError: No module named 'missing_module'"}}
	stuck := Incident{Kind: KindTimeout, PID: 7, At: t0, BootStuck: true}
	neverBeat := with(silence(11, 2, "S", 50*mb), func(s *probes.Sample) { s.Heartbeats = false })
	deep := &probes.Deep{Sockets: []probes.Socket{{Proto: "tcp", Local: "127.0.0.1:8000", State: "LISTEN"},
		{Proto: "tcp", Local: "10.0.0.2:41000", Remote: "10.0.0.5:5432", State: "ESTABLISHED"}}, Wchan: "sk_wait_data"}
	sleeping := &probes.Deep{Wchan: "hrtimer_nanosleep"}
	runDelay := func(pct float64) []probes.Sample {
		return with(silence(11, 30, "R", 50*mb), func(s *probes.Sample) { s.RunDelayPct = pct })
	}
	swapping := with(silence(11, 5, "D", 50*mb), func(s *probes.Sample) { s.Swap = 10 * mb })
	cg := func() []memwatch.Stats { return cgroup(11, 100*mb, 1000*mb, 0, 0) }

	for _, tc := range []struct {
		name       string
		e          Evidence
		cause      Cause
		near, long bool
		says       string // in the summary or the advice
		confidence string // "" = any
	}{
		// blocked
		{"sleep → blocked", Evidence{Incident: timeout, Timeline: silence(11, 1, "S", 50*mb), Container: cg()}, CauseBlocked, false, true, "waiting", "high"},
		{"db call → blocked naming the peer", Evidence{Incident: timeout, Timeline: silence(11, 1, "S", 50*mb), Deep: deep}, CauseBlocked, false, true, "tcp 10.0.0.5:5432", "medium"},
		{"peer named in the advice", Evidence{Incident: timeout, Timeline: silence(11, 1, "S", 50*mb), Deep: deep}, CauseBlocked, false, true, "the peer 10.0.0.5:5432 did not answer", ""},
		{"wait channel in words", Evidence{Incident: timeout, Timeline: silence(11, 1, "S", 50*mb), Deep: sleeping}, CauseBlocked, false, true, "a timed sleep (kernel wait hrtimer_nanosleep)", ""},
		{"App Service advice under 240 s", Evidence{Incident: timeout, Timeline: silence(11, 1, "S", 50*mb), Platform: "app_service"}, CauseBlocked, false, true, "240 s", ""},
		// cpu_bound, threshold 70 %
		{"spin → cpu_bound", Evidence{Incident: timeout, Timeline: silence(11, 99, "R", 50*mb), Container: cg()}, CauseCPUBound, false, true, "computing", "high"},
		{"cpu at the threshold → cpu_bound", Evidence{Incident: timeout, Timeline: silence(11, 70, "R", 50*mb)}, CauseCPUBound, false, true, "", ""},
		{"cpu just below → blocked", Evidence{Incident: timeout, Timeline: silence(11, 69.9, "S", 50*mb)}, CauseBlocked, false, true, "", ""},
		// memory_pressure: near limit 0.90, PSI 10 %, swapping
		{"near the limit → memory_pressure", Evidence{Incident: timeout, Timeline: silence(11, 30, "S", 900*mb), Container: cgroup(11, 950*mb, 1000*mb, 0, 0)}, CauseMemoryPressure, true, true, "near its memory limit", ""},
		{"at 90% exactly → near", Evidence{Incident: timeout, Timeline: silence(11, 5, "S", 900*mb), Container: cgroup(11, 900*mb, 1000*mb, 0, 0)}, CauseMemoryPressure, true, true, "", ""},
		{"at 89.9% → not near", Evidence{Incident: timeout, Timeline: silence(11, 5, "S", 899*mb), Container: cgroup(11, 899*mb, 1000*mb, 0, 0)}, CauseBlocked, false, true, "", ""},
		{"no limit → never near", Evidence{Incident: timeout, Timeline: silence(11, 5, "S", 899*mb), Container: cgroup(11, 4000*mb, 0, 0, 0)}, CauseBlocked, false, true, "", ""},
		{"container PSI at 10% → memory_pressure", Evidence{Incident: timeout, Timeline: silence(11, 5, "S", 100*mb), Container: cgroup(11, 500*mb, 1000*mb, 0, 10)}, CauseMemoryPressure, false, true, "", ""},
		{"container PSI at 9.9% → blocked", Evidence{Incident: timeout, Timeline: silence(11, 5, "S", 100*mb), Container: cgroup(11, 500*mb, 1000*mb, 0, 9.9)}, CauseBlocked, false, true, "", ""},
		{"host-wide PSI does not count", Evidence{Incident: timeout, Timeline: silence(11, 5, "S", 100*mb), Container: hostPSI(cgroup(11, 500*mb, 1000*mb, 0, 50))}, CauseBlocked, false, true, "", ""},
		{"swapping in D state → memory_pressure", Evidence{Incident: timeout, Timeline: swapping}, CauseMemoryPressure, false, true, "", ""},
		// cpu_starved: run delay 20 %, or throttled while runnable
		{"throttled → cpu_starved", Evidence{Incident: timeout, Timeline: silence(11, 5, "R", 50*mb), Container: cgroup(11, 100*mb, 0, 10, 0)}, CauseCPUStarved, false, true, "quota", ""},
		{"throttled but sleeping → blocked", Evidence{Incident: timeout, Timeline: silence(11, 5, "S", 50*mb), Container: cgroup(11, 100*mb, 0, 10, 0)}, CauseBlocked, false, true, "", ""},
		{"run delay at 20% → cpu_starved", Evidence{Incident: timeout, Timeline: runDelay(20)}, CauseCPUStarved, false, true, "", ""},
		{"run delay at 19.9% → blocked", Evidence{Incident: timeout, Timeline: runDelay(19.9)}, CauseBlocked, false, true, "", ""},
		// oom_killed
		{"oom kill", Evidence{Incident: oom, Timeline: silence(3, 50, "R", 990*mb), Container: cgroup(3, 999*mb, 1000*mb, 0, 0)}, CauseOOMKilled, true, false, "OOM killer", "high"},
		{"oom kill missed by the samples is still at the limit", Evidence{Incident: oom, Timeline: silence(3, 50, "R", 40*mb), Container: cgroup(3, 41*mb, 200*mb, 0, 0)}, CauseOOMKilled, true, false, "OOM killer", ""},
		{"oom kill with no line at all", Evidence{Incident: oomSilent}, CauseOOMKilled, true, false, "--max-requests", ""},
		{"oom kill after a timeout (thrashing)", Evidence{Incident: escalatedOOM, Timeline: silence(11, 5, "D", 990*mb)}, CauseOOMKilled, true, true, "", ""},
		{"handled abort is not the OOM kill", Evidence{Incident: handled, Timeline: silence(11, 1, "S", 50*mb)}, CauseBlocked, false, true, "", ""},
		{"an exit code is not the OOM kill", Evidence{Incident: exitOOM, Container: cg()}, CauseCrashed, false, false, "code 7", ""},
		// Gunicorn's own escalation
		{"escalation is not an OOM", Evidence{Incident: escalated, Timeline: silence(11, 99, "R", 50*mb), Container: cg()}, CauseCPUBound, false, true, `"Perhaps out of memory?" was its own SIGKILL after the timeout, not an OOM kill`, ""},
		{"escalation without the cgroup says what it knows", Evidence{Incident: escalated, Timeline: silence(11, 99, "R", 50*mb)}, CauseCPUBound, false, true, "Gunicorn itself sent that SIGKILL when the worker ignored SIGABRT", ""},
		// boot_timeout
		{"boot stuck (≥22)", Evidence{Incident: stuck, Timeline: neverBeat}, CauseBootTimeout, false, true, "Gunicorn ≥ 22 does not time out a booting worker", "high"},
		{"timeout of a worker that never beat (≤21)", Evidence{Incident: timeout, Timeline: neverBeat}, CauseBootTimeout, false, true, "--preload", ""},
		// crashed
		{"segv → crashed", Evidence{Incident: segv, Timeline: silence(3, 10, "S", 50*mb)}, CauseCrashed, false, false, "PYTHONFAULTHANDLER", "high"},
		{"sigkill, oom_kill read and still → crashed", Evidence{Incident: kill, Container: cg()}, CauseCrashed, false, false, `"Perhaps out of memory?" is a guess`, "medium"},
		{"exit code → crashed", Evidence{Incident: exit}, CauseCrashed, false, false, "code 7", "high"},
		{"boot failure names the exception", Evidence{Incident: bootFail}, CauseCrashed, false, false, "failed to boot (exit code 3): ModuleNotFoundError: No module named 'missing_module'", "high"},
		{"vanished without a line → crashed, low", Evidence{Incident: gone, Container: cg()}, CauseCrashed, false, false, "without a Gunicorn line", "low"},
		// unknown
		{"no samples → unknown", Evidence{Incident: timeout}, CauseUnknown, false, true, "no samples", "low"},
		{"sigkill, oom_kill unreadable → unknown", Evidence{Incident: kill}, CauseUnknown, false, false, "could not read the cgroup's oom_kill counter", "low"},
		{"vanished, oom_kill unreadable → unknown", Evidence{Incident: gone}, CauseUnknown, false, false, "could not read the cgroup's oom_kill counter", "low"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.e.Settings = settings
			v := Classify(tc.e, DefaultThresholds())
			if v.Cause != tc.cause || v.NearMemoryLimit != tc.near || v.RanLong != tc.long {
				t.Errorf("cause %s near %v long %v, want %s %v %v\n%s", v.Cause, v.NearMemoryLimit, v.RanLong, tc.cause, tc.near, tc.long, v.Summary)
			}
			if !strings.Contains(v.Summary+"\n"+strings.Join(v.Advice, "\n"), tc.says) {
				t.Errorf("summary %q, advice %q do not say %q", v.Summary, v.Advice, tc.says)
			}
			if tc.confidence != "" && v.Confidence != tc.confidence {
				t.Errorf("confidence %s, want %s", v.Confidence, tc.confidence)
			}
			if v.Summary == "" || strings.Contains(v.Summary, ". ") || !strings.HasSuffix(v.Summary, ".") || len(v.Evidence) == 0 || len(v.Advice) == 0 && v.Cause != CauseUnknown {
				t.Errorf("incomplete verdict %+v", v)
			}
			if v.Cause == CauseUnknown && len(v.Missing) == 0 {
				t.Error("an unknown cause does not say which evidence is missing")
			}
			if again := Classify(tc.e, DefaultThresholds()); again.Summary != v.Summary || again.Cause != v.Cause {
				t.Error("Classify is not deterministic")
			}
		})
	}
}

// TestClassifyNoAppServiceAdviceAboveItsLimit: with --timeout above 240 s the advice does not
// tell the user to raise it above 240 s.
func TestClassifyNoAppServiceAdviceAboveItsLimit(t *testing.T) {
	s := gunicorn.Defaults()
	s.Timeout = 300
	ss := silence(301, 1, "S", 1)
	v := Classify(Evidence{Incident: Incident{Kind: KindTimeout, PID: 7, At: t0, Timeout: true}, Settings: s, Timeline: ss, Platform: "app_service"}, DefaultThresholds())
	if v.Cause != CauseBlocked || strings.Contains(strings.Join(v.Advice, " "), "240 s") {
		t.Errorf("%s %q", v.Cause, v.Advice)
	}
}

// TestClassifyThresholdsAreKnobs: each threshold moves the verdict when changed.
func TestClassifyThresholdsAreKnobs(t *testing.T) {
	s := gunicorn.Defaults()
	s.Timeout = 10
	inc := Incident{Kind: KindTimeout, PID: 7, At: t0, Timeout: true}
	e := Evidence{Incident: inc, Settings: s, Timeline: silence(11, 50, "S", 1<<20), Container: cgroup(11, 800<<20, 1000<<20, 0, 5)}
	th := DefaultThresholds()
	if c := Classify(e, th).Cause; c != CauseBlocked {
		t.Fatalf("default: %s", c)
	}
	for name, f := range map[string]func(*Thresholds){
		"NearLimit 0.8":  func(t *Thresholds) { t.NearLimit = 0.8 },
		"MemoryPSI 5":    func(t *Thresholds) { t.MemoryPSI = 5 },
		"CPUBound 50":    func(t *Thresholds) { t.CPUBound = 50 },
		"RunDelay 0":     func(t *Thresholds) { t.RunDelay = 0 },
		"LongShare 1.01": func(t *Thresholds) { t.LongShare = 1.01 },
	} {
		th := DefaultThresholds()
		f(&th)
		v := Classify(e, th)
		if name == "LongShare 1.01" {
			// A logged timeout ran long whatever the share; a worker that was not timed out did not.
			e2 := e
			e2.Incident = Incident{Kind: KindSignal, PID: 7, At: t0, Signal: "SIGSEGV"}
			if !Classify(e2, DefaultThresholds()).RanLong || Classify(e2, th).RanLong {
				t.Errorf("%s did not move ran_long", name)
			}
			continue
		}
		if v.Cause == CauseBlocked {
			t.Errorf("%s did not move the verdict", name)
		}
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
