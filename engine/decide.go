package engine

import (
	"syscall"

	"github.com/gwrap/gwrap/postmortem"
)

// facts are what decide looks at: everything gathered about one worker's end by the time its
// follow-up window closed.
type facts struct {
	OOMKilled    bool // the cgroup's oom_kill counter moved with this death
	OOMShared    bool // …with other workers' deaths too, and gwrap cannot tell which the kernel killed
	Timeout      bool // a WORKER TIMEOUT from the master, with the heartbeat really stale
	StuckBoot    bool // it never beat, past the timeout
	Died         bool // it vanished (or is dying)
	Signal       int  // the master logged its death by this signal (0: no such line)
	ExitCode     *int // the master logged its exit code
	Exiting      bool // it logged "Worker exiting" (a Python-level exit)
	Stopping     bool // it was told to stop: a signal to Gunicorn, max-requests, a shutdown
	ExitsVisible bool // the worker's INFO lines reach gwrap: a normal exit would have said so
	StaleAtDeath bool // it vanished with its heartbeat stale past the timeout
	BootFailure  bool // the worker's "Exception in worker process", confirmed by the master (its Reason line or exit code 3/4)
	Final        bool // gwrap is stopping: this is the last word on it
	Arbiter      bool // the record is the dirty arbiter's: its death is of its own kind
	Folded       bool // a dirty worker's boot failure folded into the first one of a boot loop
}

// decide says whether an incident happened and of what kind. A death is reported only when
// something says it was not an ordinary exit: an OOM kill, a timeout, a stuck boot, a signal or
// a non-zero exit that no stop explains, or — when the worker's lines would have shown a normal
// exit — a silent vanish. When they would not (Gunicorn's lines do not reach gwrap), a silent
// vanish is a timeout if the heartbeat was stale past the timeout, and nothing otherwise.
func decide(f facts) (confirmed bool, kind postmortem.Kind) {
	if f.Folded {
		return false, ""
	}
	if f.Arbiter {
		// The arbiter's death: an OOM kill, or a signal or an exit code that no stop explains.
		return f.OOMKilled || f.Signal != 0 && !stopSignal(f.Signal, f.Stopping) ||
			f.ExitCode != nil && *f.ExitCode != 0 && !f.Stopping, postmortem.KindDirtyArbiterExit
	}
	switch {
	case f.OOMKilled && f.Timeout:
		return true, postmortem.KindTimeout
	case f.OOMKilled && f.OOMShared:
		return true, postmortem.KindSignal // a SIGKILL, by the OOM killer or not: reported either way
	case f.OOMKilled:
		return true, postmortem.KindOOMKill
	case f.Timeout:
		return true, postmortem.KindTimeout
	case f.StuckBoot && (f.Died || f.Final):
		return true, postmortem.KindTimeout
	case f.StuckBoot:
		return false, "" // still booting: worker.boot or its death will say
	case f.BootFailure:
		return true, postmortem.KindBootFailure
	case f.Signal != 0 && !stopSignal(f.Signal, f.Stopping):
		return true, postmortem.KindSignal
	case f.ExitCode != nil && *f.ExitCode != 0 && !f.Stopping:
		return true, postmortem.KindExit
	case f.Signal != 0 || f.ExitCode != nil || f.Exiting || f.Stopping:
		return false, ""
	case f.Died && f.ExitsVisible:
		return true, postmortem.KindSignal
	case f.Died && f.StaleAtDeath:
		return true, postmortem.KindTimeout
	}
	return false, ""
}

// stopSignal reports whether a worker's death by sig is part of a stop: Gunicorn's own SIGTERM
// to an old worker, and — once a worker was told to stop — the SIGKILL after graceful_timeout and
// the QUIT/INT of a fast shutdown.
func stopSignal(sig int, stopping bool) bool {
	switch syscall.Signal(sig) {
	case syscall.SIGTERM:
		return true
	case syscall.SIGKILL, syscall.SIGQUIT, syscall.SIGINT:
		return stopping
	}
	return false
}
