package output

import (
	"fmt"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/postmortem"
)

// The contract events gwrap writes outside the engine (start, exit, start-up signals, the
// previous run's post-mortem, the master stopped or replaced, warnings), each one typed method:
// their names and fields are written here only, and go out through Emit as the engine's do.

func field(key string, v any) engine.Field { return engine.Field{Key: key, Value: v} }

// Warn writes a config.warning every time it is called: code is what degraded; extra are the
// fields some warnings carry besides (fix, part, counts).
func (o *Writer) Warn(code, msg string, extra ...engine.Field) {
	o.Emit(engine.Event{Level: engine.Warn, Name: "config.warning", Message: msg, Fields: append([]engine.Field{field("code", code)}, extra...)})
}

// Panicked writes the config.warning (at error level) for a part of gwrap that panicked, once
// per part.
func (o *Writer) Panicked(part, panicked, where, msg string) {
	o.Emit(engine.Event{Level: engine.Error, Name: "config.warning", Message: msg, Fields: []engine.Field{
		field("code", "panic"), field("part", part), field("panic", panicked), field("where", where)},
		Fact: engine.Warning{Key: "panic:" + part, Code: "panic"}})
}

// Start is what gwrap.start says.
type Start struct {
	Version     string
	PID         int
	Command     []string // redacted
	ReportDir   string
	Timeout     int
	Workers     int
	WorkerClass string
	HostCores   int
	// Cgroup is set when the container's cgroup was found.
	Cgroup  *StartCgroup
	Message string
}

// StartCgroup is the container's cgroup as gwrap.start says it.
type StartCgroup struct {
	Version     int
	Path        string
	MemoryLimit *uint64  // nil: no limit known
	CPUQuota    *float64 // nil: no quota known
}

// Start writes gwrap.start.
func (o *Writer) Start(s Start) {
	fs := []engine.Field{field("version", s.Version), field("gwrap_pid", s.PID), field("command", s.Command),
		field("report_dir", s.ReportDir), field("timeout_s", s.Timeout), field("workers", s.Workers),
		field("worker_class", s.WorkerClass), field("host_cores", s.HostCores)}
	if c := s.Cgroup; c != nil {
		fs = append(fs, field("cgroup_version", c.Version), field("cgroup", c.Path))
		if c.MemoryLimit != nil {
			fs = append(fs, field("memory_limit_bytes", *c.MemoryLimit))
		}
		if c.CPUQuota != nil {
			fs = append(fs, field("cpu_quota_cores", *c.CPUQuota))
		}
	}
	o.Emit(engine.Event{Level: engine.Info, Name: "gwrap.start", Message: s.Message, Fields: fs})
}

// Exit is what gwrap.exit says; the lines lost are the Writer's count.
type Exit struct {
	Code                 int
	Reason               string
	Incidents            int
	DrainCut             bool
	ReportsUnwritten     int
	FlightLinesUnwritten int
}

// Exit writes gwrap.exit: at info level for code 0, else at error level.
func (o *Writer) Exit(x Exit) {
	level := engine.Info
	if x.Code != 0 {
		level = engine.Error
	}
	o.Emit(engine.Event{Level: level, Name: "gwrap.exit", Message: "gwrap exits: " + x.Reason, Fields: []engine.Field{
		field("exit_code", x.Code), field("reason", x.Reason), field("incidents", x.Incidents), field("lines_lost", o.Lost()),
		field("drain_cut", x.DrainCut), field("reports_unwritten", x.ReportsUnwritten), field("flight_lines_unwritten", x.FlightLinesUnwritten)}})
}

// StartupSignal writes the signal event for a signal received before Gunicorn runs (name as
// every event names it: SIGHUP).
func (o *Writer) StartupSignal(name string) {
	o.Emit(engine.Event{Level: engine.Info, Name: "signal", Message: "received " + name + " during start-up, not forwarded: Gunicorn is not running yet",
		Fields: []engine.Field{field("signal", name), field("forwarded", false)}})
}

// Stopped writes gunicorn.stopped: the master pid was stopped by signal (SIGSTOP…).
func (o *Writer) Stopped(pid int, signal string) {
	o.Emit(engine.Event{Level: engine.Warn, Name: "gunicorn.stopped", Fields: []engine.Field{field("pid", pid), field("signal", signal)},
		Message: fmt.Sprintf("the Gunicorn master %d was stopped by %s: it accepts and answers nothing, and no worker timeout fires, until it gets SIGCONT", pid, signal)})
}

// Continued writes gunicorn.continued.
func (o *Writer) Continued(pid int) {
	o.Emit(engine.Event{Level: engine.Info, Name: "gunicorn.continued", Fields: []engine.Field{field("pid", pid)},
		Message: fmt.Sprintf("the Gunicorn master %d continues", pid)})
}

// NewMaster writes gunicorn.new_master: after USR2 the old master exited and pid is followed.
func (o *Writer) NewMaster(pid int) {
	o.Emit(engine.Event{Level: engine.Warn, Name: "gunicorn.new_master", Fields: []engine.Field{field("pid", pid)},
		Message: fmt.Sprintf("the old Gunicorn master exited after USR2; gwrap now follows the new master %d", pid)})
}

// PreviousRun writes the postmortem event of the previous run's report, written to path ("" if
// it was not).
func (o *Writer) PreviousRun(rep postmortem.Report, path string) {
	v := rep.Verdict
	fields := []engine.Field{
		field("cause", string(v.Cause)), field("pid", rep.Incident.PID), field("kind", string(rep.Incident.Kind)),
		field("near_memory_limit", v.NearMemoryLimit), field("ran_long", v.RanLong), field("confidence", v.Confidence),
		field("summary", v.Summary), field("report", path), field("id", rep.ID)}
	if rs := rep.Incident.Requests; len(rs) > 0 { // as the engine's postmortem events carry them
		names := make([]string, len(rs))
		for i, r := range rs {
			names[i] = r.Running()
		}
		fields = append(fields, field("requests", names))
	}
	o.Emit(engine.Event{Level: engine.Error, Name: "postmortem", Message: v.Summary, Fields: fields})
}
