package postmortem

import (
	"testing"
	"time"
)

// TestDecide: the decision alone, from facts, at every cause and on both sides of every
// threshold (defaults: near 90 %, PSI 10 %, CPU 70 %, run delay 20 %, ran long at half the
// timeout).
func TestDecide(t *testing.T) {
	const mb = 1 << 20
	code := func(c int) *int { return &c }
	// base: a sync worker timed out after a 10 s silence, sleeping, with the cgroup read.
	base := Facts{PID: 7, Kind: KindTimeout, Timeout: 10 * time.Second, TimeoutLogged: true, Samples: 11, Silence: 10 * time.Second,
		CPU: 1, CPUKnown: true, States: "sleeping 100%", HaveCgroup: true, OOMKnown: true, WSKnown: true, WSPeak: 100 * mb, Limit: 1000 * mb, WSFrac: 0.1}
	with := func(f func(*Facts)) Facts { x := base; f(&x); return x }
	crash := func(f func(*Facts)) Facts {
		return with(func(x *Facts) { x.Kind, x.TimeoutLogged, x.Silence = KindSignal, false, time.Second; f(x) })
	}
	for _, tc := range []struct {
		name       string
		f          Facts
		cause      Cause
		branch     Branch
		near, long bool
		confidence string
	}{
		{"sleeping → blocked", base, CauseBlocked, BranchWaiting, false, true, "high"},
		{"async class → its loop was blocked", with(func(x *Facts) { x.Async, x.Class = true, "gevent" }), CauseBlocked, BranchLoopBlocked, false, true, "high"},
		{"few samples → medium", with(func(x *Facts) { x.Samples = 2 }), CauseBlocked, BranchWaiting, false, true, "medium"},
		{"no cgroup → medium", with(func(x *Facts) { x.HaveCgroup = false }), CauseBlocked, BranchWaiting, false, true, "medium"},
		{"no samples → unknown", with(func(x *Facts) { x.Samples, x.CPUKnown = 0, false }), CauseUnknown, BranchNoSamples, false, true, "low"},
		// CPU 70 %
		{"cpu 70 → cpu_bound", with(func(x *Facts) { x.CPU = 70 }), CauseCPUBound, BranchNone, false, true, ""},
		{"cpu 69.9 → blocked", with(func(x *Facts) { x.CPU = 69.9 }), CauseBlocked, BranchWaiting, false, true, ""},
		{"cpu unmeasured is not cpu_bound", with(func(x *Facts) { x.CPU, x.CPUKnown = 99, false }), CauseBlocked, BranchWaiting, false, true, ""},
		// near the limit 90 %, on the peak before the death
		{"ws 90% → memory_pressure", with(func(x *Facts) { x.WSPeak, x.WSFrac = 900*mb, 0.9 }), CauseMemoryPressure, BranchNearLimit, true, true, ""},
		{"ws 89.9% → blocked", with(func(x *Facts) { x.WSPeak, x.WSFrac = 899*mb, 0.899 }), CauseBlocked, BranchWaiting, false, true, ""},
		{"no limit → never near", with(func(x *Facts) { x.Limit, x.WSFrac = 0, 0 }), CauseBlocked, BranchWaiting, false, true, ""},
		{"ws unreadable → never near", with(func(x *Facts) { x.WSKnown, x.WSFrac = false, 0.95 }), CauseBlocked, BranchWaiting, false, true, ""},
		{"near beats cpu", with(func(x *Facts) { x.WSFrac, x.CPU = 0.95, 99 }), CauseMemoryPressure, BranchNearLimit, true, true, ""},
		// PSI 10 %, container only
		{"psi 10 → memory_pressure", with(func(x *Facts) { x.MemPSI = 10 }), CauseMemoryPressure, BranchPSI, false, true, ""},
		{"psi 9.9 → blocked", with(func(x *Facts) { x.MemPSI = 9.9 }), CauseBlocked, BranchWaiting, false, true, ""},
		{"host-wide psi does not count", with(func(x *Facts) { x.MemPSI, x.PSIHost = 50, true }), CauseBlocked, BranchWaiting, false, true, ""},
		{"swapping → memory_pressure", with(func(x *Facts) { x.Swapping = true }), CauseMemoryPressure, BranchSwap, false, true, ""},
		// run delay 20 %, throttling while runnable
		{"run delay 20 → cpu_starved", with(func(x *Facts) { x.RunDelay = 20 }), CauseCPUStarved, BranchRunQueue, false, true, ""},
		{"run delay 19.9 → blocked", with(func(x *Facts) { x.RunDelay = 19.9 }), CauseBlocked, BranchWaiting, false, true, ""},
		{"throttled and runnable → cpu_starved under the quota", with(func(x *Facts) { x.Throttled, x.Runnable, x.Quota = 5, 0.5, 0.5 }), CauseCPUStarved, BranchQuota, false, true, ""},
		{"throttled, runnable 49% → blocked", with(func(x *Facts) { x.Throttled, x.Runnable, x.Quota = 5, 0.49, 0.5 }), CauseBlocked, BranchWaiting, false, true, ""},
		{"throttled but computing → cpu_bound", with(func(x *Facts) { x.Throttled, x.Runnable, x.Quota, x.CPU = 5, 1, 0.5, 80 }), CauseCPUBound, BranchNone, false, true, ""},
		// ran long at half the timeout (a logged timeout always ran long)
		{"silent 5 s of 10, not timed out", crash(func(x *Facts) { x.Signal, x.Silence = "SIGSEGV", 5*time.Second }), CauseCrashed, BranchSignal, false, true, "high"},
		{"silent 4.9 s of 10", crash(func(x *Facts) { x.Signal, x.Silence = "SIGSEGV", 4900*time.Millisecond }), CauseCrashed, BranchSignal, false, false, "high"},
		{"timeout unknown → not long", crash(func(x *Facts) { x.Signal, x.Silence, x.Timeout = "SIGSEGV", time.Hour, 0 }), CauseCrashed, BranchSignal, false, false, "high"},
		// oom_killed
		{"oom kill", crash(func(x *Facts) { x.Signal, x.OOMKillDelta = "SIGKILL", 1 }), CauseOOMKilled, BranchOOM, true, false, "high"},
		{"oom kill with no line", crash(func(x *Facts) { x.OOMKillDelta = 1 }), CauseOOMKilled, BranchOOM, true, false, "high"},
		{"oom kill after a timeout", with(func(x *Facts) { x.Signal, x.OOMKillDelta, x.Escalated = "SIGKILL", 1, true }), CauseOOMKilled, BranchOOMAfter, true, true, "high"},
		{"handled abort is not the oom kill", with(func(x *Facts) { x.HandledAbort, x.OOMKillDelta = true, 1 }), CauseBlocked, BranchWaiting, false, true, ""},
		{"an exit code is not the oom kill", crash(func(x *Facts) { x.Kind, x.ExitCode, x.OOMKillDelta = KindExit, code(7), 1 }), CauseCrashed, BranchExit, false, false, "high"},
		{"a segfault is not the oom kill", crash(func(x *Facts) { x.Signal, x.OOMKillDelta = "SIGSEGV", 1 }), CauseCrashed, BranchSignal, false, false, "high"},
		{"an oom kill that may have been another worker's", crash(func(x *Facts) { x.Signal, x.OOMKillDelta, x.OOMShared = "SIGKILL", 1, []int{8} }), CauseUnknown, BranchOOMShared, true, false, "low"},
		{"a timeout whose end may have been the oom kill", with(func(x *Facts) { x.Signal, x.OOMKillDelta, x.OOMShared, x.Escalated = "SIGKILL", 1, []int{8}, true }), CauseBlocked, BranchWaiting, false, true, "low"},
		// boot_timeout
		{"boot stuck", with(func(x *Facts) { x.TimeoutLogged, x.BootStuck, x.NeverBeat = false, true, true }), CauseBootTimeout, BranchBootStuck, false, true, "high"},
		{"timed out, never beat", with(func(x *Facts) { x.NeverBeat = true }), CauseBootTimeout, BranchBootLogged, false, true, "high"},
		// crashed and its unknowns
		{"sigkill, counter still", crash(func(x *Facts) { x.Signal = "SIGKILL" }), CauseCrashed, BranchSIGKILL, false, false, "medium"},
		{"sigkill, counter unreadable", crash(func(x *Facts) { x.Signal, x.OOMKnown = "SIGKILL", false }), CauseUnknown, BranchNoOOMCount, false, false, "low"},
		{"vanished, counter unreadable", crash(func(x *Facts) { x.Vanished, x.OOMKnown = true, false }), CauseUnknown, BranchNoOOMCount, false, false, "low"},
		{"vanished, counter still", crash(func(x *Facts) { x.Vanished = true }), CauseCrashed, BranchVanished, false, false, "low"},
		{"segv", crash(func(x *Facts) { x.Signal = "SIGSEGV" }), CauseCrashed, BranchSignal, false, false, "high"},
		{"exit 3", crash(func(x *Facts) { x.Kind, x.ExitCode = KindExit, code(3) }), CauseCrashed, BranchBootFailure, false, false, "high"},
		{"exit 4", crash(func(x *Facts) { x.Kind, x.ExitCode = KindExit, code(4) }), CauseCrashed, BranchBootFailure, false, false, "high"},
		{"exit 1", crash(func(x *Facts) { x.Kind, x.ExitCode = KindExit, code(1) }), CauseCrashed, BranchExit, false, false, "high"},
		{"boot_failure kind without a code", crash(func(x *Facts) { x.Kind, x.OOMKnown = KindBootFailure, false }), CauseCrashed, BranchBootFailure, false, false, "high"},
		{"a signal kind after a logged timeout is a crash", with(func(x *Facts) { x.Kind, x.Signal = KindSignal, "SIGSEGV" }), CauseCrashed, BranchSignal, false, true, "high"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decide(tc.f, DefaultThresholds())
			if d.Cause != tc.cause || d.Branch != tc.branch || d.NearMemoryLimit != tc.near || d.RanLong != tc.long {
				t.Errorf("got %+v, want %s/%s near %v long %v", d, tc.cause, tc.branch, tc.near, tc.long)
			}
			if tc.confidence != "" && d.Confidence != tc.confidence {
				t.Errorf("confidence %s, want %s", d.Confidence, tc.confidence)
			}
		})
	}
}
