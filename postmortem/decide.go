package postmortem

import "time"

// Branch says which case of a cause the decision took, for the sentences to explain it.
type Branch string

// The branches of the causes that have more than one story.
const (
	BranchNone        Branch = ""
	BranchNoOOMCount  Branch = "sigkill_no_oom_counter" // unknown: SIGKILL or vanish, the oom_kill counter unreadable
	BranchNoSamples   Branch = "no_samples"             // unknown: a timeout with no sample of the worker
	BranchSIGKILL     Branch = "sigkill"                // crashed: SIGKILL from outside, the counter did not move
	BranchSignal      Branch = "signal"                 // crashed: SIGSEGV, SIGABRT…
	BranchBootFailure Branch = "boot_failure"           // crashed: exit 3 or 4
	BranchExit        Branch = "exit"                   // crashed: another non-zero exit
	BranchVanished    Branch = "vanished"               // crashed: gone with no line and no OOM kill
	BranchPSI         Branch = "memory_psi"             // memory_pressure from PSI alone
	BranchSwap        Branch = "swapping"               // memory_pressure from swapping in D
	BranchNearLimit   Branch = "near_limit"             // memory_pressure near the limit
	BranchQuota       Branch = "throttled"              // cpu_starved under a quota
	BranchRunQueue    Branch = "run_queue"              // cpu_starved waiting for a CPU
	BranchOOMAfter    Branch = "oom_after_timeout"      // oom_killed after a timeout
	BranchOOM         Branch = "oom"                    // oom_killed
	BranchOOMShared   Branch = "oom_shared"             // unknown: an OOM kill and other SIGKILLs at once, the victim not told apart
	BranchBootLogged  Branch = "boot_timeout_logged"    // boot_timeout: Gunicorn ≤ 21 timed out a worker that never beat
	BranchBootStuck   Branch = "boot_stuck"             // boot_timeout: gwrap saw the boot stuck (Gunicorn ≥ 22)
	BranchLoopBlocked Branch = "event_loop_blocked"     // blocked: an async worker's loop or threads stalled
	BranchWaiting     Branch = "waiting"                // blocked: a sync worker waited
)

// Decision is the verdict without its words: the cause, the two facts users ask for, and how
// sure gwrap is.
type Decision struct {
	Cause           Cause
	Branch          Branch
	NearMemoryLimit bool
	RanLong         bool
	Confidence      string // high, medium, low
}

// decide is the classification: a pure function of the facts and the thresholds.
func decide(f Facts, th Thresholds) Decision {
	d := Decision{
		NearMemoryLimit: f.Limit > 0 && f.WSKnown && f.WSFrac >= th.NearLimit,
		RanLong: f.TimeoutLogged || f.TimeoutInferred || f.BootStuck || f.Kind == KindExecTimeout ||
			(f.Timeout > 0 && f.Silence >= time.Duration(th.LongShare*float64(f.Timeout))),
	}
	sigkill := (f.Signal == "" || f.Signal == "SIGKILL") && !f.HandledAbort && f.ExitCode == nil
	oomKilled := f.OOMKillDelta > 0 && sigkill && len(f.OOMShared) == 0
	// The kill may have been this worker's or another's: the timeout, if any, is still certain.
	oomShared := f.OOMKillDelta > 0 && sigkill && len(f.OOMShared) > 0
	psiHigh := f.MemPSI >= th.MemoryPSI && !f.PSIHost
	cpuBound := f.CPUKnown && f.CPU >= th.CPUBound
	starved := f.CPUKnown && (f.RunDelay >= th.RunDelay || (f.Throttled > 0 && f.Runnable >= 0.5 && f.CPU < th.CPUBound))
	switch {
	case oomKilled:
		// It reached the limit by definition, even when a 1 Hz sample missed the last spike.
		d.Cause, d.Branch, d.NearMemoryLimit, d.Confidence = CauseOOMKilled, BranchOOM, true, "high"
		if f.TimeoutLogged {
			d.Branch = BranchOOMAfter
		}
	case oomShared && !f.TimeoutLogged && !f.BootStuck:
		// The container did reach its limit (an OOM kill happened), whichever worker it took.
		d.Cause, d.Branch, d.NearMemoryLimit, d.Confidence = CauseUnknown, BranchOOMShared, true, "low"
	case f.BootStuck:
		d.Cause, d.Branch, d.Confidence = CauseBootTimeout, BranchBootStuck, "high"
	case f.TimeoutLogged && f.NeverBeat:
		d.Cause, d.Branch, d.Confidence = CauseBootTimeout, BranchBootLogged, "high"
	case f.Kind == KindSignal || f.Kind == KindExit || f.Kind == KindBootFailure || f.Kind == KindDirtyArbiterExit ||
		!f.TimeoutLogged && !f.TimeoutInferred && f.Kind != KindExecTimeout:
		d.Cause = CauseCrashed
		switch {
		case f.Kind == KindBootFailure:
			d.Branch, d.Confidence = BranchBootFailure, "high"
		case (f.Signal == "SIGKILL" || f.Signal == "" && f.ExitCode == nil) && !f.OOMKnown:
			d.Cause, d.Branch, d.Confidence = CauseUnknown, BranchNoOOMCount, "low"
		case f.Signal == "SIGKILL":
			d.Branch, d.Confidence = BranchSIGKILL, "medium"
		case f.Signal != "":
			d.Branch, d.Confidence = BranchSignal, "high"
		case f.ExitCode != nil && (*f.ExitCode == 3 || *f.ExitCode == 4):
			d.Branch, d.Confidence = BranchBootFailure, "high"
		case f.ExitCode != nil:
			d.Branch, d.Confidence = BranchExit, "high"
		default:
			d.Branch, d.Confidence = BranchVanished, "low"
		}
	case f.Samples == 0:
		d.Cause, d.Branch, d.Confidence = CauseUnknown, BranchNoSamples, "low"
	case d.NearMemoryLimit:
		d.Cause, d.Branch = CauseMemoryPressure, BranchNearLimit
	case psiHigh:
		d.Cause, d.Branch = CauseMemoryPressure, BranchPSI
	case f.Swapping:
		d.Cause, d.Branch = CauseMemoryPressure, BranchSwap
	case cpuBound:
		d.Cause = CauseCPUBound
	case starved:
		d.Cause, d.Branch = CauseCPUStarved, BranchRunQueue
		if f.Throttled > 0 && f.Quota > 0 {
			d.Branch = BranchQuota
		}
	default:
		d.Cause, d.Branch = CauseBlocked, BranchWaiting
		if f.Async {
			d.Branch = BranchLoopBlocked
		}
	}
	if oomShared {
		d.Confidence = "low"
	}
	if d.Confidence == "" {
		switch {
		case f.Samples >= 3 && f.HaveCgroup:
			d.Confidence = "high"
		case f.Samples > 0:
			d.Confidence = "medium"
		default:
			d.Confidence = "low"
		}
	}
	return d
}
