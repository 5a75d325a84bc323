package postmortem

import (
	"fmt"
	"strings"
	"time"
)

// The words of Gunicorn 25+'s dirty workers: an action that ran past --dirty-timeout
// (execution_timeout), the dirty arbiter's death, a dirty worker that cannot boot, and an HTTP
// worker that waited on a dirty worker. A dirty worker timed out by its arbiter, or OOM-killed,
// is told in the HTTP workers' words, with its name and --dirty-timeout (words.go).

// className is the worker class a sentence names: a dirty worker's loop is asyncio's.
func className(f Facts) string {
	if f.Role == RoleDirty {
		return "asyncio loop"
	}
	return f.Class
}

// dirtySummary is the summary of the incidents only dirty workers have; ok is false for the others.
func dirtySummary(f Facts, d Decision) (string, bool) {
	switch {
	case f.Kind == KindExecTimeout:
		return execSummary(f, d), true
	case f.Kind == KindDirtyArbiterExit:
		return arbiterSummary(f, d), true
	case f.Role == RoleDirty && f.Kind == KindBootFailure && d.Cause == CauseCrashed:
		s := who(f) + " failed to boot"
		if f.Exception != "" {
			s += ": " + f.Exception
		}
		s += "; the dirty arbiter starts another at once, which fails the same way, again and again (Gunicorn does not stop), and calls to its apps fail meanwhile"
		if f.Repeats > 0 {
			s += fmt.Sprintf(" (%d more failed to boot before this report)", f.Repeats)
		}
		return s + ".", true
	}
	return "", false
}

// execSummary: what the action did, that Gunicorn gave up on it but could not stop it, and
// whether it still runs.
func execSummary(f Facts, d Decision) string {
	action := f.Action
	if action == "" {
		action = "an action"
	} else {
		action = "`" + action + "`"
	}
	var what string
	switch d.Cause {
	case CauseCPUBound:
		what = fmt.Sprintf("computing%s (%.0f%% of a core)", in(f), f.CPU)
	case CauseBlocked:
		waiting := ""
		if len(f.Waiting) > 0 {
			waiting = " on " + describeWait(f.Waiting[0])
		}
		what = fmt.Sprintf("waiting%s%s (%s)", waiting, in(f), cpuWords(f))
	case CauseCPUStarved:
		what = fmt.Sprintf("held back from the CPU%s (%.0f%% of a core, waiting for a CPU %.0f%% of the time)", in(f), f.CPU, f.RunDelay)
	case CauseMemoryPressure:
		what = fmt.Sprintf("while the container was short of memory%s", in(f))
	default:
		what = "doing what gwrap could not measure" + in(f)
	}
	queued := ""
	if f.Queued > 0 && f.QueuedBehind != "" {
		queued = fmt.Sprintf(" (the call first waited %s behind `%s` on the worker's only thread)", secs(f.Queued), f.QueuedBehind)
	}
	s := fmt.Sprintf("%s ran %s past the %s%s %s: Gunicorn answered its caller with DirtyTimeoutError, but cannot cancel the action", who(f), action, limit(f), queued, what)
	holding := ""
	if f.DirtyThreads > 0 {
		holding = fmt.Sprintf(", holding one of the worker's %d --dirty-threads", f.DirtyThreads)
		if f.DirtyThreads == 1 {
			holding = ", holding the worker's only thread (--dirty-threads 1)"
		}
	}
	switch {
	case !f.ActionEnded.IsZero():
		s += fmt.Sprintf(": it ran on in its thread for another %s (%s in all)%s until it ended", secs(f.ActionFor-(f.Timeout-f.Queued)), secs(f.ActionFor), holding)
	case f.ActionRunning != nil && *f.ActionRunning:
		s += ": it is still running in its thread" + holding
		if f.DirtyThreads == 1 {
			s += ": the next call to this worker waits until it ends"
		}
	case f.ActionRunning != nil:
		s += ": it had ended by the time gwrap looked again"
	default:
		s += ", and gwrap cannot tell whether it still runs (no Python stack of the worker)"
	}
	return s + "."
}

// arbiterSummary: how the dirty arbiter died, and what became of its workers.
func arbiterSummary(f Facts, d Decision) string {
	w := who(f)
	var s string
	switch {
	case d.Cause == CauseOOMKilled:
		s = w + " was killed by the kernel's OOM killer (the cgroup's oom_kill counter moved as it died)"
		if f.Limit > 0 && f.WSKnown {
			s += fmt.Sprintf(": the container was at %s of its %s limit", mib(f.WSPeak), mib(f.Limit))
		}
	case f.Signal == "SIGKILL" && f.OOMKnown:
		s = w + " was SIGKILLed, not by the OOM killer (the cgroup's oom_kill counter did not move): by the platform, a person or another supervisor"
	case f.Signal == "SIGKILL":
		s = w + " was SIGKILLed (gwrap could not read the cgroup's oom_kill counter to tell an OOM kill from anything else)"
	case f.Signal != "":
		s = w + " died of " + f.Signal
	case f.ExitCode != nil:
		s = fmt.Sprintf("%s exited with code %d", w, *f.ExitCode)
	default:
		s = w + " is gone"
	}
	s += "; Gunicorn's master starts another, with new dirty workers"
	if len(f.Orphans) > 0 {
		s += fmt.Sprintf(", but its dirty workers %s are still running, orphaned (Gunicorn's dirty workers do not watch their parent), holding their memory until the container stops", intList(f.Orphans))
	}
	return s + "."
}

// dirtyWaitWords names what an HTTP worker waited on: "dirty worker 812 (`app.ml:Heavy.predict`,
// cpu_bound for 41.0 s)".
func dirtyWaitWords(dw *DirtyWait) string {
	if dw.PID == 0 {
		s := "the dirty arbiter (" + dw.Socket + ")"
		switch {
		case len(dw.Candidates) > 0:
			s += fmt.Sprintf(": one of the dirty workers %s, all running an action, served the call", intList(dw.Candidates))
		case dw.Why != "":
			s += ": " + dw.Why
		}
		return s
	}
	var parts []string
	if dw.Action != "" {
		parts = append(parts, "`"+dw.Action+"`")
	} else if dw.StackTop != "" {
		parts = append(parts, "in `"+dw.StackTop+"`")
	}
	if dw.Cause != "" {
		parts = append(parts, fmt.Sprintf("%s for %s", dw.Cause, secs(time.Duration(dw.Seconds*float64(time.Second)))))
	}
	s := fmt.Sprintf("dirty worker %d", dw.PID)
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

// dirtyEvidence adds the dirty facts to a verdict's evidence.
func dirtyEvidence(f Facts, fact func(name, val, thr string)) {
	if f.Role == RoleDirty && len(f.Apps) > 0 {
		fact("dirty worker's apps", strings.Join(f.Apps, ", "), "")
	}
	if f.Kind == KindExecTimeout {
		fact("action past --dirty-timeout", f.Action, secs(f.Timeout))
		switch {
		case !f.ActionEnded.IsZero():
			fact("the action ran in all", secs(f.ActionFor), "")
		case f.ActionRunning != nil:
			fact("still running when the report was written", yesNo(*f.ActionRunning), "")
		}
	}
	if f.Repeats > 0 {
		fact("more dirty workers failed to boot the same way", fmt.Sprint(f.Repeats), "")
	}
	if len(f.Orphans) > 0 {
		fact("its dirty workers still running", intList(f.Orphans), "")
	}
	if dw := f.DirtyWait; dw != nil {
		fact("waiting on the dirty arbiter's socket", dw.Socket, "")
		if dw.PID != 0 {
			v := fmt.Sprint(dw.PID)
			if dw.Action != "" {
				v += " running " + dw.Action
			}
			fact("the dirty worker serving the call", v, "")
			if dw.CPUPercent != nil {
				fact("its CPU while the call waited", fmt.Sprintf("%.0f%% of one core", *dw.CPUPercent), "")
			}
		}
	}
}

// dirtyAdvice is the advice for dirty incidents; done says the generic advice does not apply.
func dirtyAdvice(f Facts, d Decision) (out []string, done bool) {
	switch {
	case f.Kind == KindExecTimeout:
		act := "the action"
		if f.Action != "" {
			act = f.Action
		}
		out = append(out, "Gunicorn cannot stop an action it gave up on: make "+act+" end by itself (a deadline it checks, a timeout on what it waits on)",
			fmt.Sprintf("or raise --dirty-timeout (now %s) above what %s needs, and the caller's client timeout with it", secs(f.Timeout), act))
		if f.DirtyThreads == 1 {
			out = append(out, "with --dirty-threads 1 an action that runs on holds the worker's only thread: raise --dirty-threads (the app must then be thread-safe) or --dirty-workers")
		}
		if d.Cause == CauseCPUBound {
			out = append(out, "a computation this long is better split, or run as a background job the caller polls")
		}
		return out, true
	case f.Kind == KindDirtyArbiterExit:
		if d.Cause == CauseOOMKilled {
			out = append(out, "the dirty arbiter keeps every stash table in its own memory: keep stashed values small, or give the container more memory")
		}
		if len(f.Orphans) > 0 {
			out = append(out, "restart the container to end the orphaned dirty workers: Gunicorn will not")
		}
		return append(out, "look for what else sent the signal, or for the arbiter's traceback in the log"), true
	case f.Role == RoleDirty && d.Cause == CauseCrashed && f.Kind == KindBootFailure:
		return []string{"fix the dirty app's init() (see the traceback): the dirty arbiter retries it without end",
			"run it by hand with the container's environment: python -c 'from yourmodule import YourApp; YourApp().init()'"}, true
	case f.Role == RoleDirty && d.Cause == CauseOOMKilled:
		return []string{"a dirty worker keeps what its apps load (a model) for its whole life: give the container more memory, run fewer --dirty-workers, or load a large app in fewer of them (--dirty-app module:Class:N, or workers = N on the class)",
			"Gunicorn never recycles dirty workers: memory that grows with each call is a leak in the app"}, true
	case f.Role == RoleDirty && d.Cause == CauseCPUBound:
		return []string{"work that keeps the GIL this long (C code) stops the dirty worker's own heartbeat: release the GIL in the extension, run it in a subprocess, or raise --dirty-timeout above it",
			"a computation this long is better split, or run as a background job the caller polls"}, true
	case f.DirtyWait != nil:
		out = append(out, "the HTTP worker waited on a dirty worker longer than its --timeout: call dirty apps from a thread (gthread) or an async worker (-k asgi with get_dirty_client_async) so the HTTP worker keeps beating, or give the call a timeout below --timeout (get_dirty_client(timeout=…))")
	}
	return out, false
}

func intList(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = fmt.Sprint(n)
	}
	return strings.Join(parts, ", ")
}
