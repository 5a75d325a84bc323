package gunicorn

import "strings"

// Gunicorn 25+ runs an optional pool of "dirty" workers for long blocking work (--dirty-app,
// --dirty-workers, --dirty-timeout, --dirty-threads): the master forks a dirty arbiter, and the
// arbiter forks the dirty workers, each with a heartbeat file of its own that the arbiter checks
// against --dirty-timeout (gunicorn/dirty/arbiter.py, worker.py; read at 26.2.2). Their lines, by
// emitter:
//
//	master:  Spawned dirty arbiter (pid: P) at SOCKET                       INFO
//	         Dirty arbiter (pid:P) exited with code C | exited | killed by signal S   ERROR | INFO | WARNING
//	         Killing orphaned dirty arbiter (pid: P)                        WARNING
//	arbiter: Dirty arbiter starting (pid: P)                                INFO
//	         Spawned dirty worker (pid: P) with apps: ['mod:Class', …]     INFO
//	         DIRTY WORKER TIMEOUT (pid:P)                                   CRITICAL (SIGABRT sent; SIGKILL a pass later)
//	         Dirty worker (pid:P) killed by signal S                        WARNING (S a number; no "Perhaps out of memory?")
//	         Dirty worker failed to boot (pid:P)                            ERROR (exit code 3)
//	         Dirty worker exited (pid:P)                                    INFO (every reap, whatever the cause)
//	worker:  Execution timeout for mod:Class.action after Ns               WARNING (the action's thread runs on)
//	         Exception in dirty worker process + traceback                  ERROR (a boot failure, before the exit)

// dirtyMessages are the dirty lines gwrap reads (parse.go's markers take them in).
var dirtyMessages = []marker{
	{"Spawned dirty arbiter (pid: ", func(ev Event, rest string, _ bool) (Event, bool) {
		pid, after, ok := cutPID(rest)
		if !ok || !strings.HasPrefix(after, ")") {
			return ev, false
		}
		ev.Kind, ev.WorkerPID = KindDirtyArbiterSpawned, pid
		if sock, ok := strings.CutPrefix(after, ") at "); ok {
			ev.Socket = strings.TrimSpace(sock)
		}
		return ev, true
	}},
	{"Spawned dirty worker (pid: ", func(ev Event, rest string, _ bool) (Event, bool) {
		pid, after, ok := cutPID(rest)
		apps, ok2 := strings.CutPrefix(after, ") with apps: ")
		if !ok || !ok2 {
			return ev, false
		}
		ev.Kind, ev.WorkerPID, ev.Apps = KindDirtySpawned, pid, parseAppList(apps)
		return ev, true
	}},
	{"DIRTY WORKER TIMEOUT (pid:", dirtyPID(KindDirtyTimeout)},
	{"Dirty arbiter starting (pid: ", dirtyPID(KindDirtyArbiterStarting)},
	{"Dirty arbiter (pid:", arbiterExited},
	{"Dirty worker (pid:", func(ev Event, rest string, _ bool) (Event, bool) {
		pid, after, ok := cutPID(rest)
		sig, ok2 := strings.CutPrefix(after, ") killed by signal ")
		n, ok3 := leadingInt(sig)
		if !ok || !ok2 || !ok3 {
			return ev, false
		}
		ev.Kind, ev.WorkerPID, ev.Signal, ev.SignalName = KindDirtySignaled, pid, n, signalName(n)
		return ev, true
	}},
	{"Dirty worker failed to boot (pid:", dirtyPID(KindDirtyBootFailed)},
	{"Dirty worker exited (pid:", dirtyPID(KindDirtyExited)},
	{"Killing orphaned dirty arbiter (pid: ", dirtyPID(KindDirtyArbiterOrphan)},
	{"Execution timeout for ", execTimeout},
	{"Exception in dirty worker process", kind(KindDirtyWorkerError)},
}

// dirtyPID parses a message whose marker is followed by a pid and ")".
func dirtyPID(k Kind) func(Event, string, bool) (Event, bool) {
	return func(ev Event, rest string, _ bool) (Event, bool) {
		pid, after, ok := cutPID(rest)
		if !ok || !strings.HasPrefix(after, ")") {
			return ev, false
		}
		ev.Kind, ev.WorkerPID = k, pid
		return ev, true
	}
}

// arbiterExited is the master's "Dirty arbiter (pid:P) exited with code C | exited | killed by
// signal S".
func arbiterExited(ev Event, rest string, _ bool) (Event, bool) {
	pid, after, ok := cutPID(rest)
	if !ok {
		return ev, false
	}
	switch {
	case strings.HasPrefix(after, ") exited with code "):
		code, ok := leadingInt(strings.TrimPrefix(after, ") exited with code "))
		if !ok {
			return ev, false
		}
		ev.ExitCode = code
	case strings.HasPrefix(after, ") killed by signal "):
		n, ok := leadingInt(strings.TrimPrefix(after, ") killed by signal "))
		if !ok {
			return ev, false
		}
		ev.Signal, ev.SignalName = n, signalName(n)
	case strings.TrimSpace(after) == ") exited":
	default:
		return ev, false
	}
	ev.Kind, ev.WorkerPID = KindDirtyArbiterExited, pid
	return ev, true
}

// execTimeout is a dirty worker's "Execution timeout for mod.sub:Class.action after 300s": the
// app path holds no dot after its colon.
func execTimeout(ev Event, rest string, _ bool) (Event, bool) {
	call, after, ok := strings.Cut(rest, " after ")
	colon := strings.LastIndexByte(call, ':')
	dot := strings.LastIndexByte(call, '.')
	if !ok || colon <= 0 || dot < colon || dot == len(call)-1 {
		return ev, false
	}
	ev.Kind, ev.App, ev.Action = KindDirtyExecTimeout, call[:dot], call[dot+1:]
	ev.Seconds, _ = leadingInt(after)
	return ev, true
}

// parseAppList reads the Python repr of a list of strings: ['app.ml:Heavy', "b:C"].
func parseAppList(s string) []string {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	var out []string
	for _, part := range strings.Split(s, ",") {
		part = strings.Trim(strings.TrimSpace(part), `'"`)
		if part != "" {
			out = append(out, part)
		}
	}
	return out
}

// IsDirty reports whether an event is one of the dirty arbiter's or its workers' lines.
func (e Event) IsDirty() bool {
	switch e.Kind {
	case KindDirtyArbiterSpawned, KindDirtyArbiterStarting, KindDirtyArbiterExited, KindDirtyArbiterOrphan,
		KindDirtySpawned, KindDirtyTimeout, KindDirtySignaled, KindDirtyBootFailed, KindDirtyExited,
		KindDirtyExecTimeout, KindDirtyWorkerError:
		return true
	}
	return false
}
