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
	BootStuck    bool   `json:"boot_stuck"`          // gwrap saw it never finish booting
	Vanished     bool   `json:"vanished"`            // gwrap saw the process disappear
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
