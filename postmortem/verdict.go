// Package postmortem turns what gwrap saw into explanations: the vocabulary of causes in rank
// order (causes.go, handed to metrics and termlog) with their words and advice, the report of
// an incident (one per dead worker: the engine gathers its evidence) and the pure function that
// classifies it (evidence in, verdict out), the previous run's words from what the flight
// record shows; it writes one report per incident atomically (JSON, schema gwrap.postmortem/v1,
// plus a self-contained HTML page), keeps retention, and reads reports back for `gwrap report`.
package postmortem

import "time"

// Kind is what happened to the worker, as far as the incident's trigger goes.
type Kind string

// Incident kinds (report field incident.kind).
const (
	KindTimeout Kind = "timeout"  // Gunicorn logged WORKER TIMEOUT, or gwrap saw a boot stuck past the timeout
	KindOOMKill Kind = "oom_kill" // the worker vanished as the cgroup's oom_kill counter moved
	KindSignal  Kind = "signal"   // died by a signal with no timeout before it
	KindExit    Kind = "exit"     // exited with a non-zero code
	// KindBootFailure: a worker could not boot (its traceback, then Gunicorn exiting 3 or 4).
	KindBootFailure Kind = "boot_failure"
	// KindPreviousRun: the whole container died; explained from the flight record at the next start.
	KindPreviousRun Kind = "previous_run"
	// KindExecTimeout: a dirty worker's action ran past --dirty-timeout (Gunicorn 25+ logged
	// "Execution timeout for APP.ACTION"): Gunicorn answered the caller with an error, but the
	// action's thread cannot be cancelled and runs on; the worker lives.
	KindExecTimeout Kind = "execution_timeout"
	// KindDirtyArbiterExit: the dirty arbiter, the parent of the dirty workers, died (a signal,
	// an exit code, the OOM killer); Gunicorn's master starts another.
	KindDirtyArbiterExit Kind = "dirty_arbiter_exit"
)

// The roles of incident.role: absent for an HTTP worker.
const (
	RoleDirty        = "dirty"         // a dirty worker (Gunicorn 25+)
	RoleDirtyArbiter = "dirty_arbiter" // the dirty arbiter itself
)

// Cause is the verdict: exactly one per incident.
type Cause string

// The causes, ranked in causes.go, said in words.go.
const (
	CauseOOMKilled      Cause = "oom_killed"
	CauseMemoryPressure Cause = "memory_pressure"
	CauseCPUBound       Cause = "cpu_bound"
	CauseCPUStarved     Cause = "cpu_starved"
	CauseBlocked        Cause = "blocked"
	CauseBootTimeout    Cause = "boot_timeout"
	CauseCrashed        Cause = "crashed"
	CauseUnknown        Cause = "unknown"
)

// Fact is one piece of evidence: what was measured, its value, and the threshold it was held to.
type Fact struct {
	Fact      string `json:"fact"`
	Value     string `json:"value"`
	Threshold string `json:"threshold,omitempty"`
}

// Verdict is the classification of one incident.
type Verdict struct {
	Cause           Cause    `json:"cause"`
	NearMemoryLimit bool     `json:"near_memory_limit"`
	RanLong         bool     `json:"ran_long"`
	Summary         string   `json:"summary"`
	Confidence      string   `json:"confidence"` // high, medium, low
	Evidence        []Fact   `json:"evidence"`
	Advice          []string `json:"advice"`
	// Missing names evidence that could not be had (for cause unknown and lower confidence).
	Missing []string `json:"missing,omitempty"`
}

// Thresholds are the classifier's knobs; every one is a gwrap flag.
type Thresholds struct {
	NearLimit      float64       // working set ≥ this share of the limit is "near" (0.90)
	MemoryPSI      float64       // memory PSI some avg10 ≥ this percent is "high" (10)
	CPUBound       float64       // worker CPU ≥ this percent of one core is computing (70)
	RunDelay       float64       // run-queue wait ≥ this percent of wall time is starved (20)
	LongShare      float64       // heartbeat age ≥ this share of the timeout is "ran long" (0.5)
	FollowUpWindow time.Duration // how long to wait for follow-up lines and lagging counters (3 s)
}

// DefaultThresholds are the documented defaults.
func DefaultThresholds() Thresholds {
	return Thresholds{NearLimit: 0.90, MemoryPSI: 10, CPUBound: 70, RunDelay: 20, LongShare: 0.5, FollowUpWindow: 3 * time.Second}
}
