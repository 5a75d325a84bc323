package postmortem

import (
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

// Incident is what happened to one worker, as correlated from Gunicorn's lines, the worker
// watcher and the cgroup.
type Incident struct {
	Kind      Kind      `json:"kind"`
	PID       int       `json:"pid"`
	StartTime uint64    `json:"start_ticks,omitempty"`
	At        time.Time `json:"at"` // the death (or the timeout); samples at or after it are not the live worker
	BootedAt  time.Time `json:"booted_at,omitzero"`

	Signal       string `json:"signal,omitempty"`    // SIGKILL, SIGSEGV…
	ExitCode     *int   `json:"exit_code,omitempty"` // when Gunicorn logged one
	Timeout      bool   `json:"timeout_logged"`      // Gunicorn logged WORKER TIMEOUT
	HandledAbort bool   `json:"handled_abort"`       // the worker handled the SIGABRT and exited
	Escalated    bool   `json:"timeout_escalation"`  // Gunicorn SIGKILLed it after its timeout
	OOMHint      bool   `json:"gunicorn_oom_hint"`   // Gunicorn said "Perhaps out of memory?"
	OOMKillDelta uint64 `json:"oom_kill_delta"`      // the cgroup's oom_kill counter moved this much
	// OOMShared names the other workers that died of SIGKILL as the counter moved, when gwrap
	// cannot tell which of them (this one included) the OOM killer killed.
	OOMShared []int `json:"oom_kill_shared_with,omitempty"`
	// Recycling says, for an OOM kill, whether gwrap's recycling (--recycle-at,
	// --recycle-worker-memory) was on and why it did not prevent the kill.
	Recycling string `json:"recycling,omitempty"`
	// MemoryGrowth is, for an oom_killed or memory_pressure verdict, how fast the container's
	// memory grew before the incident and since when (nil: it did not grow, or was not sampled).
	MemoryGrowth *MemoryGrowth `json:"memory_growth,omitempty"`
	BootStuck    bool          `json:"boot_stuck"` // gwrap saw it never finish booting
	Vanished     bool          `json:"vanished"`   // gwrap saw the process disappear
	// TimeoutInferred: Gunicorn's lines do not reach gwrap, and the worker vanished with its
	// heartbeat stale past the timeout: Gunicorn's timeout, told from /proc alone.
	TimeoutInferred bool `json:"timeout_inferred,omitempty"`

	Lines     []string `json:"gunicorn_lines,omitempty"`
	Traceback []string `json:"traceback,omitempty"`
	StuckAt   string   `json:"stuck_at,omitempty"` // the app's frame in the abort traceback

	// PythonStack is the worker's Python stack taken while it was stuck, one string per frame,
	// innermost last; StackThread names the thread it is of; StackTop is the app's innermost
	// frame ("orders.py:88 in load_report"), which the summary quotes.
	PythonStack []string `json:"python_stack,omitempty"`
	StackThread string   `json:"stack_thread,omitempty"`
	StackTop    string   `json:"stack_top,omitempty"`
	// StackError says why there is no stack ("no stack: …") when one was tried and failed.
	StackError string `json:"stack_error,omitempty"`

	// Requests are the requests the worker was serving when it died, oldest first, from the
	// request file gwrap's hook keeps in every worker (--record-requests); RequestsError says why
	// there are none to tell when that is not known ("" when they were read).
	Requests      []Request `json:"requests,omitempty"`
	RequestsError string    `json:"requests_error,omitempty"`

	// Dirty workers (Gunicorn 25+). Role is "dirty" for a dirty worker, "dirty_arbiter" for the
	// dirty arbiter, absent for an HTTP worker; DirtyApps are the apps the dirty worker loaded.
	Role      string   `json:"role,omitempty"`
	DirtyApps []string `json:"dirty_apps,omitempty"`
	// Action is, for an execution_timeout, the action that ran past --dirty-timeout
	// ("module:Class.action"); ActionRunning whether it still ran when the report was written
	// (null: unknown, no Python stack), and once it ended, when and how long it had run in all.
	Action        string    `json:"dirty_action,omitempty"`
	ActionRunning *bool     `json:"action_running,omitempty"`
	ActionEndedAt time.Time `json:"action_ended_at,omitzero"`
	ActionSeconds float64   `json:"action_seconds,omitempty"`
	// ActionQueuedSeconds is how much of --dirty-timeout the call spent waiting behind another
	// action (ActionQueuedBehind) on the worker's only thread before it ran: Gunicorn's timeout
	// counts from the call.
	ActionQueuedSeconds float64 `json:"action_queued_seconds,omitempty"`
	ActionQueuedBehind  string  `json:"action_queued_behind,omitempty"`
	// Repeats is, for a dirty worker's boot_failure, how many more dirty workers failed to boot
	// the same way while the report was made (the arbiter respawns them without end).
	Repeats int `json:"repeats,omitempty"`
	// Orphans are, for a dirty_arbiter_exit, its dirty workers still running after it died.
	Orphans []int `json:"orphans,omitempty"`
	// WaitingOnDirty is, for an HTTP worker, the dirty worker it was waiting on through the
	// dirty arbiter's socket, and what that worker was doing.
	WaitingOnDirty *DirtyWait `json:"waiting_on_dirty,omitempty"`
}

// MemoryGrowth is the container's working set growing up to an incident: the episode of growth
// gwrap's forecast follows (package forecast, the memory.forecast warning's figures).
type MemoryGrowth struct {
	// BytesPerSecond is the growth rate: the least-squares slope over the episode's last two
	// minutes (Fitted), or for a climb too short to fit (under 5 s) the mean from Since to At.
	BytesPerSecond float64 `json:"bytes_per_second"`
	Fitted         bool    `json:"fitted"`
	// Since is when the growth began: the last sample at the working set's floor, FromBytes.
	Since     time.Time `json:"since"`
	FromBytes uint64    `json:"from_bytes"`
	// WorkingSetBytes is the working set at At, the last sample up to the incident.
	WorkingSetBytes uint64    `json:"working_set_bytes"`
	At              time.Time `json:"at"`
}

// DirtyWait names the dirty worker an HTTP worker waited on and what it was doing.
type DirtyWait struct {
	Socket string `json:"socket"` // the dirty arbiter's socket the HTTP worker waited on
	// PID is the dirty worker running an action at the time (0: none was, or gwrap could not
	// tell which: Candidates lists those running one when there were several).
	PID        int      `json:"pid,omitempty"`
	Candidates []int    `json:"candidates,omitempty"`
	Action     string   `json:"action,omitempty"`    // "module:Class.action", or the action alone
	StackTop   string   `json:"stack_top,omitempty"` // the dirty worker's innermost app frame
	Cause      Cause    `json:"cause,omitempty"`     // cpu_bound or blocked: what it was doing
	CPUPercent *float64 `json:"cpu_percent"`         // its CPU over the wait (null: not measured)
	Seconds    float64  `json:"seconds"`             // how long the HTTP worker had waited
	// Why says why no dirty worker is named ("no Python stacks", "none was running an action").
	Why string `json:"why,omitempty"`
}

// Saturation is how busy the whole server was during the worker's silence.
type Saturation struct {
	AllWorkersBusy bool `json:"all_workers_busy"` // no worker was idle at any sample of the silence
	QueueMax       int  `json:"listen_queue_max"` // the listen queue's longest length during the silence
	QueueRose      bool `json:"listen_queue_rose"`
	Backlog        int  `json:"listen_backlog,omitempty"` // the listen socket's backlog (0 unknown)
}

// Evidence is everything the classifier looks at.
type Evidence struct {
	Incident  Incident
	Settings  gunicorn.Settings
	Timeline  []probes.Sample // the worker's last samples, oldest first (those at or after Incident.At are ignored)
	Deep      *probes.Deep    // the last deep sample, if one was taken
	Container []memwatch.Stats
	// Platform is where the container runs, as gunicorn.Platform reads it from the environment:
	// "app_service", "kubernetes", "cloud_run", "ecs", or "" when unknown.
	Platform string
	// Saturation is the server's load during the silence; nil when it was not measured.
	Saturation *Saturation
}

// Classify turns evidence into a verdict in three steps: measure the facts over the worker's
// silence, decide the cause from them (a pure function of facts and thresholds), and say it.
// Same evidence, same verdict.
func Classify(e Evidence, th Thresholds) Verdict {
	f := measure(e)
	return words(f, decide(f, th), th)
}
