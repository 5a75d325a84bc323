package postmortem

import (
	"fmt"
	"strings"
	"time"
)

// words turns the facts and the decision into the verdict people read: one summary sentence,
// the evidence lines, the advice. Every figure it quotes is a fact measured before the death,
// and every piece of advice is checked against the facts (worker class, platform, limits set).
func words(f Facts, d Decision, th Thresholds) Verdict {
	v := Verdict{Cause: d.Cause, NearMemoryLimit: d.NearMemoryLimit, RanLong: d.RanLong, Confidence: d.Confidence,
		Evidence: evidence(f, th), Advice: []string{}}
	v.Missing = missing(f, d)
	v.Summary = summary(f, d)
	if g := f.MemGrowth; g != nil && statesGrowth(d.Cause) {
		v.Summary = also(v.Summary, memGrowthWords(*g))
	}
	if r := requestWords(f, d); r != "" {
		v.Summary += " " + r
	}
	v.Advice = advice(f, d)
	return v
}

// who names the worker: "Worker 812", "Dirty worker 812 (app.ml:Heavy)", "The dirty arbiter 811".
func who(f Facts) string {
	switch f.Role {
	case RoleDirty:
		if len(f.Apps) > 0 {
			return fmt.Sprintf("Dirty worker %d (%s)", f.PID, strings.Join(f.Apps, ", "))
		}
		return fmt.Sprintf("Dirty worker %d", f.PID)
	case RoleDirtyArbiter:
		return fmt.Sprintf("The dirty arbiter %d", f.PID)
	}
	return fmt.Sprintf("Worker %d", f.PID)
}

// limit names the timeout the worker was held to, with its value: "30.0 s timeout", or for a
// dirty worker "300.0 s --dirty-timeout".
func limit(f Facts) string { return secs(f.Timeout) + " " + limitName(f) }

// limitName is "timeout", or "--dirty-timeout" for a dirty worker.
func limitName(f Facts) string {
	if f.Role == RoleDirty {
		return "--dirty-timeout"
	}
	return "timeout"
}

// in says where in the app the worker was, when a Python stack was taken.
func in(f Facts) string {
	if f.Where == "" {
		return ""
	}
	return " in `" + f.Where + "`"
}

func summary(f Facts, d Decision) string {
	if s, ok := dirtySummary(f, d); ok {
		return s
	}
	w := who(f)
	var s string
	switch d.Cause {
	case CauseOOMKilled:
		s = w + " was killed by the kernel's OOM killer"
		if d.Branch == BranchOOMAfter {
			s = w + " timed out and was then killed by the kernel's OOM killer"
		}
		if f.Limit > 0 {
			s += fmt.Sprintf(": the container reached its %s memory limit", mib(f.Limit))
			switch {
			case f.PeakKnown && f.WSKnown:
				s += fmt.Sprintf(" (the cgroup's recorded peak %s; working set up to %s in the samples before the kill)", mib(f.RecordedPeak), mib(f.WSPeak))
			case f.PeakKnown:
				s += fmt.Sprintf(" (the cgroup's recorded peak %s)", mib(f.RecordedPeak))
			case f.WSKnown:
				s += fmt.Sprintf(" (working set up to %s in the samples before the kill; the last allocation fell between samples)", mib(f.WSPeak))
			}
			s += " and the oom_kill counter moved as it died"
		} else {
			s += ": the container's oom_kill counter moved as it died"
		}
		switch missed, unsampled := lastMomentsMissed(f); {
		case unsampled && f.RSSKnown:
			s += fmt.Sprintf("; the worker held up to %s in its samples, but its last moments before the kill were not sampled: the container grew %s more to reach its limit", mib(f.PeakRSS), mib(missed))
		case unsampled:
			s += "; the worker's last moments before the kill were not sampled"
		case f.RSSKnown:
			s += fmt.Sprintf("; the worker held up to %s before the kill", mib(f.PeakRSS))
		}
		s += "."
	case CauseBootTimeout:
		if d.Branch == BranchBootStuck {
			s = fmt.Sprintf("%s was still booting past the %s (no heartbeat yet after %s): the app's import or start-up is too slow, and Gunicorn ≥ 22 does not time out a booting worker.", w, limit(f), secs(f.Silence))
			if f.Signal != "" {
				s = also(s, "it then died of "+f.Signal)
			}
		} else {
			s = fmt.Sprintf("%s never finished booting within the %s (it never sent a heartbeat): the app's import or start-up is too slow.", w, limit(f))
		}
	case CauseCrashed, CauseUnknown:
		s = crashSummary(f, d)
	case CauseMemoryPressure:
		switch d.Branch {
		case BranchNearLimit:
			s = fmt.Sprintf("%s timed out while the container was near its memory limit (working set up to %s of a %s limit during the silence): the kernel was reclaiming memory, which slows everything.", w, mib(f.WSPeak), mib(f.Limit))
		case BranchPSI:
			s = fmt.Sprintf("%s timed out while the container was under memory pressure (tasks stalled on memory %.0f%% of the time): the kernel was reclaiming memory, which slows everything.", w, f.MemPSI)
		default:
			s = fmt.Sprintf("%s timed out while swapping: it sat in uninterruptible I/O %.0f%% of the time with part of its memory in swap.", w, 100*f.BlockedIO)
		}
	case CauseCPUBound:
		s = fmt.Sprintf("%s ran long computing%s: %.0f%% of a core for %s, past the %s.", w, in(f), f.CPU, secs(max(f.Silence, 0)), limit(f))
	case CauseCPUStarved:
		if d.Branch == BranchQuota {
			s = fmt.Sprintf("%s wanted CPU but was held back%s: %.0f%% of a core under a %.2f-core quota throttled %d times.", w, in(f), f.CPU, f.Quota, f.Throttled)
		} else {
			s = fmt.Sprintf("%s wanted CPU but was held back%s: %.0f%% of a core, waiting for a CPU %.0f%% of the time while other work ran.", w, in(f), f.CPU, f.RunDelay)
		}
	case CauseBlocked:
		waiting := ""
		if len(f.Waiting) > 0 {
			waiting = " on " + describeWait(f.Waiting[0])
		}
		if f.DirtyWait != nil {
			waiting = " on " + dirtyWaitWords(f.DirtyWait)
		}
		if d.Branch == BranchLoopBlocked {
			s = fmt.Sprintf("%s (%s) stopped heartbeating while waiting%s%s (%s, %s) for longer than the %s: its main loop was blocked by a call that does not yield to it.", w, className(f), waiting, in(f), cpuWords(f), f.States, limit(f))
		} else {
			s = fmt.Sprintf("%s simply ran long waiting%s%s (%s, %s), longer than the %s.", w, waiting, in(f), cpuWords(f), f.States, limit(f))
		}
	}
	if f.Role == RoleDirty && f.Escalated && f.OOMKillDelta == 0 {
		s = also(s, "the dirty arbiter SIGKILLed it a second after its DIRTY WORKER TIMEOUT's SIGABRT went unanswered (no Python signal handler could run), not the OOM killer (the cgroup's oom_kill counter did not move)")
	}
	if len(f.OOMShared) > 0 && d.Branch != BranchOOMShared {
		s = also(s, "as it died the kernel's OOM killer killed a process in the container while "+workers(f.OOMShared)+" died of SIGKILL too, and gwrap cannot tell whether this worker was that OOM kill")
	}
	if f.Escalated && f.OOMHint && f.OOMKillDelta == 0 {
		if f.OOMKnown {
			s = also(s, "Gunicorn's \"Perhaps out of memory?\" was its own SIGKILL after the timeout, not an OOM kill (the cgroup's oom_kill counter did not move)")
		} else {
			s = also(s, "Gunicorn's \"Perhaps out of memory?\" came right after its own timeout, so Gunicorn itself sent that SIGKILL when the worker ignored SIGABRT (the oom_kill counter could not be read to rule out an OOM kill as well)")
		}
	}
	if g := f.Growth; g != nil && d.Cause != CauseBootTimeout {
		s = also(s, "its memory grew from "+mib(g.From)+" to "+mib(g.To)+" in "+span(g.Over))
	}
	if queued(f) {
		s = also(s, fmt.Sprintf("every worker was busy and the listen queue grew to %d, so requests may have waited in the queue before they started", f.Saturation.QueueMax))
	}
	return s
}

// statesGrowth reports whether a verdict of this cause states the container's memory growth:
// the causes memory explains.
func statesGrowth(c Cause) bool { return c == CauseOOMKilled || c == CauseMemoryPressure }

// memGrowthWords says the container's growth: "the container's memory had grown 12.0 MiB/s since
// 10:02:03 UTC (from 80.0 MiB to 290.0 MiB)".
func memGrowthWords(g MemoryGrowth) string {
	how := ""
	if !g.Fitted {
		how = " on average"
	}
	return fmt.Sprintf("the container's memory had grown %s/s%s since %s UTC (from %s to %s)",
		mib(uint64(g.BytesPerSecond)), how, g.Since.UTC().Format("15:04:05"), mib(g.FromBytes), mib(g.WorkingSetBytes))
}

// lastMomentsMissed says whether an OOM kill's samples missed the growth that led to it: the
// kernel kills when the container's usage reaches the limit, so what the samples' working set
// fell short of the limit grew after the last of them. When that shortfall is more than a tenth
// of what the worker held in its samples, the worker's sampled peak is not what the kernel
// killed (the kernel's figure is up to the shortfall higher): it is not quoted as the peak.
func lastMomentsMissed(f Facts) (missed uint64, unsampled bool) {
	if f.Limit == 0 || !f.WSKnown || f.WSPeak >= f.Limit {
		return 0, false
	}
	missed = f.Limit - f.WSPeak
	return missed, missed > f.PeakRSS/10
}

func cpuWords(f Facts) string {
	if !f.CPUKnown {
		return "CPU unknown"
	}
	return fmt.Sprintf("%.0f%% CPU", f.CPU)
}

// queued reports whether the silence saw every worker busy and the listen queue growing.
func queued(f Facts) bool {
	return f.Saturation != nil && f.Saturation.AllWorkersBusy && f.Saturation.QueueRose && f.Saturation.QueueMax > 0
}

func crashSummary(f Facts, d Decision) string {
	w := who(f)
	switch d.Branch {
	case BranchOOMShared:
		s := fmt.Sprintf("%s died of SIGKILL as the kernel's OOM killer killed a process in the container, while %s died of SIGKILL too: one of them was the OOM kill and gwrap cannot tell which (the OOM killer takes the process holding the most memory", w, workers(f.OOMShared))
		if f.RSSKnown {
			s += fmt.Sprintf("; this one held up to %s in its last samples", mib(f.PeakRSS))
		}
		s += ")"
		if f.Limit > 0 {
			s += fmt.Sprintf("; the container reached its %s memory limit", mib(f.Limit))
		}
		return s + "."
	case BranchNoOOMCount:
		how := "was SIGKILLed with no Gunicorn timeout before it"
		if f.Signal == "" {
			how = "disappeared without a Gunicorn line saying why"
		}
		return fmt.Sprintf("%s %s, and gwrap could not read the cgroup's oom_kill counter: it cannot tell an OOM kill from anything else.", w, how)
	case BranchNoSamples:
		return fmt.Sprintf("%s timed out, but gwrap has no samples of it to tell why.", w)
	case BranchSIGKILL:
		s := fmt.Sprintf("%s was SIGKILLed without a Gunicorn timeout and without the cgroup's OOM killer: something else sent SIGKILL (the platform, a person, another supervisor, or an OOM kill outside this container's cgroup).", w)
		if f.OOMHint {
			s = also(s, "Gunicorn's \"Perhaps out of memory?\" is a guess it adds to every SIGKILL, and the oom_kill counter did not move")
		}
		return s
	case BranchSignal:
		return fmt.Sprintf("%s crashed%s: it died of %s (a fault in C code or an abort), with no timeout before it.", w, in(f), f.Signal)
	case BranchBootFailure:
		s := w + " failed to boot"
		if f.ExitCode != nil {
			what := map[int]string{3: "failed to boot", 4: "could not load the app"}[*f.ExitCode]
			if what == "" {
				what = "failed to boot"
			}
			s = fmt.Sprintf("%s %s (exit code %d)", w, what, *f.ExitCode)
		}
		if f.Exception != "" {
			s += ": " + f.Exception
		}
		return s + "; Gunicorn stops when a worker cannot boot."
	case BranchExit:
		s := fmt.Sprintf("%s exited with code %d: the app or a library ended the process", w, *f.ExitCode)
		if f.Exception != "" {
			s += " (" + f.Exception + ")"
		}
		return s + "."
	}
	return fmt.Sprintf("%s disappeared without a Gunicorn line saying why and without an OOM kill.", w)
}

func missing(f Facts, d Decision) []string {
	var m []string
	if !f.HaveCgroup {
		m = append(m, "container memory (cgroup unreadable)")
	}
	if f.Silence < 0 {
		m = append(m, "heartbeat age")
	}
	if f.Samples == 0 {
		m = append(m, "worker samples")
	}
	if !f.OOMKnown && f.OOMKillDelta == 0 {
		m = append(m, "the cgroup's oom_kill counter")
	}
	if d.Branch == BranchVanished {
		m = append(m, "a Gunicorn line about the worker's end (--log-level info or lower shows them; Gunicorn ≤ 19.9 logs none)")
	}
	return m
}

// workers names other workers: "worker 12", "workers 12 and 13", "workers 12, 13 and 14".
func workers(pids []int) string {
	names := make([]string, len(pids))
	for i, p := range pids {
		names[i] = fmt.Sprint(p)
	}
	if len(names) == 1 {
		return "worker " + names[0]
	}
	return "workers " + strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// also joins a clause to a one-sentence summary.
func also(summary, clause string) string {
	return strings.TrimSuffix(summary, ".") + "; " + clause + "."
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func secs(d time.Duration) string {
	if d < 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// span says a duration the way people do: "45 s", "9 minutes", "2.5 hours".
func span(d time.Duration) string {
	switch {
	case d < 2*time.Minute:
		return fmt.Sprintf("%.0f s", d.Seconds())
	case d < 2*time.Hour:
		return fmt.Sprintf("%.0f minutes", d.Minutes())
	}
	return fmt.Sprintf("%.1f hours", d.Hours())
}
