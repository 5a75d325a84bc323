package gunicorn

import (
	"fmt"
	"strings"
	"time"
)

// dirtyLoopGap ends a dirty boot loop in a log: a boot failure this long after the previous one
// is a new incident.
const dirtyLoopGap = time.Minute

// dirtyEvent reads the dirty arbiter's and dirty workers' lines (Gunicorn 25+).
func (x *explainer) dirtyEvent(ev Event) {
	pid := ev.WorkerPID
	switch ev.Kind {
	case KindDirtyArbiterSpawned:
		x.ex.Counts["dirty_arbiter_started"]++
		x.timeline(pid, ev.Time, "dirty arbiter started")
	case KindDirtySpawned:
		x.ex.Counts["dirty_spawned"]++
		x.timeline(pid, ev.Time, "dirty worker spawned ("+strings.Join(ev.Apps, ", ")+")")
	case KindDirtyTimeout:
		x.ex.Counts["dirty_timeout"]++
		x.timeline(pid, ev.Time, "DIRTY WORKER TIMEOUT (SIGABRT sent)")
		x.incident(pid, ev.Time, "timeout", ev.Line).Role = "dirty"
	case KindDirtySignaled:
		x.timeline(pid, ev.Time, "died of "+ev.SignalName)
		if inc := x.open[pid]; inc != nil && inc.Role == "dirty" && inc.Kind == "timeout" && inc.Signal == "" {
			inc.Signal, inc.TimeoutEscalation = ev.SignalName, ev.Signal == 9
			inc.Lines = append(inc.Lines, ev.Line)
			return
		}
		if ev.Signal == 15 {
			return // the arbiter's own SIGTERM: a scale-down or a stop
		}
		x.ex.Counts["dirty_signal"]++
		inc := x.incident(pid, ev.Time, "signal", ev.Line)
		inc.Role, inc.Signal, inc.PossibleOOM = "dirty", ev.SignalName, ev.Signal == 9
	case KindDirtyWorkerError:
		if ev.PID != 0 {
			x.dirtyTB[ev.PID] = ev.Traceback
		}
	case KindDirtyBootFailed:
		tb := x.dirtyTB[pid]
		delete(x.dirtyTB, pid)
		x.timeline(pid, ev.Time, "dirty worker failed to boot")
		if l := x.dirtyLoop; l != nil && !ev.Time.IsZero() && !l.at.IsZero() && ev.Time.Sub(l.at) < dirtyLoopGap {
			l.Repeats++
			l.at = ev.Time
			return
		}
		x.ex.Counts["dirty_boot_failure"]++
		inc := x.incident(pid, ev.Time, "boot_failure", ev.Line)
		code := 3
		inc.Role, inc.ExitCode, inc.Traceback = "dirty", &code, tb
		x.dirtyLoop = inc
	case KindDirtyExecTimeout:
		x.ex.Counts["execution_timeout"]++
		x.timeline(ev.PID, ev.Time, "execution timeout of "+ev.App+"."+ev.Action)
		inc := x.incident(ev.PID, ev.Time, "execution_timeout", ev.Line)
		inc.Role, inc.Action = "dirty", ev.App+"."+ev.Action
		x.open[ev.PID] = nil // the worker lives on: this incident takes no later line
	case KindDirtyArbiterExited:
		x.timeline(pid, ev.Time, strings.TrimPrefix(ev.Message, fmt.Sprintf("Dirty arbiter (pid:%d) ", pid)))
		if ev.Signal == 0 && ev.ExitCode == 0 || ev.Signal == 15 {
			return // a stop
		}
		x.ex.Counts["dirty_arbiter_exit"]++
		inc := x.incident(pid, ev.Time, "dirty_arbiter_exit", ev.Line)
		inc.Role = "dirty_arbiter"
		if ev.Signal != 0 {
			inc.Signal, inc.PossibleOOM = ev.SignalName, ev.Signal == 9
		} else {
			code := ev.ExitCode
			inc.ExitCode = &code
		}
	case KindDirtyArbiterOrphan:
		x.ex.Warnings = append(x.ex.Warnings, fmt.Sprintf("Gunicorn killed the dirty arbiter %d that a previous master left running (it had crashed without stopping it)", pid))
	}
}

// explainDirty says in plain words what the log alone tells about a dirty worker's incident.
func explainDirty(inc *LogIncident) string {
	switch inc.Kind {
	case "timeout":
		s := "The dirty arbiter's timeout: the dirty worker did not heartbeat within --dirty-timeout (its own loop was stuck: C code holding the GIL, or a blocking call on its loop), so the arbiter logged DIRTY WORKER TIMEOUT and sent SIGABRT."
		if inc.TimeoutEscalation {
			s += " It did not exit, so the arbiter SIGKILLed it a second later: that SIGKILL was the arbiter's escalation, not an out-of-memory kill."
		}
		return s + " Whether it was computing or waiting the log cannot say: run Gunicorn under gwrap to know."
	case "signal":
		s := fmt.Sprintf("The dirty worker died of %s with no DIRTY WORKER TIMEOUT before it.", inc.Signal)
		if inc.PossibleOOM {
			s += " A SIGKILL the arbiter did not send is most often the kernel's OOM killer (a model too large for the container): the cgroup's oom_kill counter would tell, and gwrap reads it when it supervises Gunicorn."
		}
		return s
	case "boot_failure":
		s := "The dirty worker failed to boot: its app's import or init() raised (see the traceback). The arbiter starts another at once, which fails the same way: Gunicorn does not stop, and calls to the dirty apps fail meanwhile."
		if inc.Repeats > 0 {
			s += fmt.Sprintf(" %d more dirty workers failed to boot the same way right after.", inc.Repeats)
		}
		return s
	case "execution_timeout":
		return fmt.Sprintf("The dirty action %s ran past --dirty-timeout: Gunicorn answered its caller with DirtyTimeoutError, but cannot cancel the action, whose thread runs on in the worker (with --dirty-threads 1 the next call to that worker waits for it). When it ended the log does not say: gwrap follows it when it supervises Gunicorn.", inc.Action)
	case "dirty_arbiter_exit":
		s := "The dirty arbiter, the parent of the dirty workers, died"
		if inc.Signal != "" {
			s += " of " + inc.Signal
		} else if inc.ExitCode != nil {
			s += fmt.Sprintf(" with exit code %d", *inc.ExitCode)
		}
		return s + ". Gunicorn's master starts another; dirty workers do not watch their parent, so the old ones may still run, orphaned."
	}
	return ""
}
