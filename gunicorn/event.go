// Package gunicorn is gwrap's knowledge of Gunicorn: it parses the log lines of every release
// (19.9 to the current one) into typed events, gathers Gunicorn's effective settings from the
// command line, GUNICORN_CMD_ARGS and the config file, lints them at start-up, and explains an
// existing log (gwrap explain).
//
// The parser is pure: it never reads files, never blocks, and never fails; a line it does not
// know becomes a KindRaw event carrying the line untouched.
package gunicorn

import "time"

// Kind names what a log line says.
type Kind string

// The kinds of event a line can carry. The strings are stable: they appear in JSON output.
const (
	KindRaw             Kind = "raw"              // not a line the parser knows
	KindAccess          Kind = "access"           // an access-log line
	KindStarting        Kind = "starting"         // Starting gunicorn VERSION
	KindListening       Kind = "listening"        // Listening at: URL (PID)
	KindUsingWorker     Kind = "using_worker"     // Using worker: CLASS
	KindBooting         Kind = "booting"          // Booting worker with pid: N
	KindWorkerExiting   Kind = "worker_exiting"   // Worker exiting (pid: N)
	KindTimeout         Kind = "timeout"          // WORKER TIMEOUT (pid:N)
	KindSignaled        Kind = "signaled"         // a worker died by a signal (any release's wording)
	KindExited          Kind = "exited"           // Worker (pid:N) exited with code C[.]
	KindHandlingSignal  Kind = "handling_signal"  // Handling signal: term
	KindHangUp          Kind = "hang_up"          // Hang up: Master
	KindShuttingDown    Kind = "shutting_down"    // Shutting down: Master
	KindReason          Kind = "reason"           // Reason: Worker failed to boot.
	KindRequestError    Kind = "request_error"    // Error handling request [METHOD] URI (+ traceback)
	KindWorkerError     Kind = "worker_exception" // Exception in worker process (+ traceback)
	KindMasterError     Kind = "master_exception" // Unhandled exception in main loop (+ traceback)
	KindAutorestart     Kind = "autorestart"      // Autorestarting worker after current request.
	KindGracefulTimeout Kind = "graceful_timeout" // Worker graceful timeout (pid:N)

	// Gunicorn 25+'s dirty arbiter and its dirty workers (dirty.go). The arbiter is a child of
	// the master; the dirty workers are the arbiter's children.
	KindDirtyArbiterSpawned  Kind = "dirty_arbiter_spawned"   // Spawned dirty arbiter (pid: P) at SOCKET (the master)
	KindDirtyArbiterStarting Kind = "dirty_arbiter_starting"  // Dirty arbiter starting (pid: P) (the arbiter)
	KindDirtyArbiterExited   Kind = "dirty_arbiter_exited"    // Dirty arbiter (pid:P) exited [with code C] / killed by signal S (the master)
	KindDirtyArbiterOrphan   Kind = "dirty_arbiter_orphan"    // Killing orphaned dirty arbiter (pid: P) (a new master)
	KindDirtySpawned         Kind = "dirty_spawned"           // Spawned dirty worker (pid: P) with apps: [...] (the arbiter)
	KindDirtyTimeout         Kind = "dirty_timeout"           // DIRTY WORKER TIMEOUT (pid:P) (the arbiter)
	KindDirtySignaled        Kind = "dirty_signaled"          // Dirty worker (pid:P) killed by signal S (the arbiter)
	KindDirtyBootFailed      Kind = "dirty_boot_failed"       // Dirty worker failed to boot (pid:P) (the arbiter)
	KindDirtyExited          Kind = "dirty_exited"            // Dirty worker exited (pid:P) (the arbiter, at every reap)
	KindDirtyExecTimeout     Kind = "dirty_execution_timeout" // Execution timeout for APP.ACTION after Ns (the dirty worker)
	KindDirtyWorkerError     Kind = "dirty_worker_exception"  // Exception in dirty worker process (+ traceback; the dirty worker)
)

// Event is what one log line (plus, for errors, the traceback lines that follow it) says.
// Fields that a line does not carry keep their zero value; PID and WorkerPID are 0 when unknown.
type Event struct {
	Kind    Kind      `json:"kind"`
	Line    string    `json:"line"`              // the original line, without its newline
	Time    time.Time `json:"time,omitzero"`     // Gunicorn's own timestamp (local time, whole seconds)
	PID     int       `json:"pid,omitempty"`     // the process that emitted the line
	Level   string    `json:"level,omitempty"`   // INFO, WARNING, ERROR, CRITICAL, DEBUG
	Message string    `json:"message,omitempty"` // the text after the prefix (the whole line if none)

	WorkerPID  int    `json:"worker_pid,omitempty"`  // the worker the line is about
	Signal     int    `json:"signal,omitempty"`      // KindSignaled: signal number when known
	SignalName string `json:"signal_name,omitempty"` // KindSignaled: e.g. SIGKILL
	CoreDump   bool   `json:"core_dump,omitempty"`   // KindSignaled: "was sent code 134!" (21–23)
	OOMHint    bool   `json:"oom_hint,omitempty"`    // "Perhaps out of memory?" was appended
	ExitCode   int    `json:"exit_code,omitempty"`   // KindExited
	Repeat     bool   `json:"repeat,omitempty"`      // KindExited: the second line 21.0–23.x print for one exit

	Version     string   `json:"version,omitempty"`      // KindStarting
	WorkerClass string   `json:"worker_class,omitempty"` // KindUsingWorker
	Listeners   []string `json:"listeners,omitempty"`    // KindListening
	SignalIn    string   `json:"signal_in,omitempty"`    // KindHandlingSignal: term, hup, ttin…
	Reason      string   `json:"reason,omitempty"`       // KindReason
	Method      string   `json:"method,omitempty"`       // KindRequestError (25.3+)
	URI         string   `json:"uri,omitempty"`          // KindRequestError

	// Dirty workers (Gunicorn 25+).
	Apps    []string `json:"apps,omitempty"`    // KindDirtySpawned: the dirty apps the worker loads ("module:Class")
	App     string   `json:"app,omitempty"`     // KindDirtyExecTimeout: "module:Class"
	Action  string   `json:"action,omitempty"`  // KindDirtyExecTimeout: the action that ran past the timeout
	Seconds int      `json:"seconds,omitempty"` // KindDirtyExecTimeout: the timeout it ran past
	Socket  string   `json:"socket,omitempty"`  // KindDirtyArbiterSpawned: the arbiter's socket path

	// Traceback holds the prefix-less lines that followed an error line, bounded in count and size.
	Traceback []string `json:"traceback,omitempty"`
}
