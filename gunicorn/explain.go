package gunicorn

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Explanation is what a Gunicorn log alone says about its worker kills (gwrap explain).
type Explanation struct {
	Version     string `json:"gunicorn_version,omitempty"`
	WorkerClass string `json:"worker_class,omitempty"`
	// Timeout is --timeout as the log's own configuration dump (--log-level debug) shows it, 0
	// when the log does not say.
	Timeout   int              `json:"timeout,omitempty"`
	Lines     int              `json:"lines"`
	Counts    map[string]int   `json:"counts"`
	Incidents []LogIncident    `json:"incidents"`
	Workers   []WorkerTimeline `json:"workers"`
	Warnings  []string         `json:"warnings"`
}

// LogIncident is one worker kill seen in a log. The JSON names of PID, At, Kind, Signal,
// TimeoutEscalation and PossibleOOM are a stable contract.
type LogIncident struct {
	PID               int    `json:"pid"`
	At                string `json:"at"`   // Gunicorn's timestamp, RFC 3339
	Kind              string `json:"kind"` // timeout, signal, exit, boot_failure
	Signal            string `json:"signal,omitempty"`
	ExitCode          *int   `json:"exit_code,omitempty"`
	TimeoutEscalation bool   `json:"timeout_escalation"` // the SIGKILL came from Gunicorn after its WORKER TIMEOUT
	PossibleOOM       bool   `json:"possible_oom"`       // a SIGKILL with no timeout before it
	HandledAbort      bool   `json:"handled_abort,omitempty"`
	StuckAt           string `json:"stuck_at,omitempty"` // the app's frame in the abort traceback (22+)
	// Request is the request the worker was serving when it timed out, and RequestSeconds how
	// long it had run, when --log-level debug logged its start ("GET /path").
	Request        string   `json:"request,omitempty"`
	RequestSeconds int      `json:"request_seconds,omitempty"`
	Explanation    string   `json:"explanation"`
	Lines          []string `json:"lines"`
	Traceback      []string `json:"traceback,omitempty"`

	// Gunicorn 25+'s dirty workers (explain_dirty.go): Role is "dirty" for a dirty worker and
	// "dirty_arbiter" for the dirty arbiter (absent for an HTTP worker); Action is an
	// execution_timeout's "module:Class.action"; Repeats counts the boot failures of a dirty
	// boot loop folded into its first.
	Role    string `json:"role,omitempty"`
	Action  string `json:"action,omitempty"`
	Repeats int    `json:"repeats,omitempty"`

	at time.Time
}

// WorkerTimeline is one worker's life as the log tells it.
type WorkerTimeline struct {
	PID    int      `json:"pid"`
	Events []string `json:"events"` // "03:42:30 booted", "03:42:36 WORKER TIMEOUT", …
}

// Explain reads a log: plain Gunicorn output, App Service's default_docker.log (lines prefixed by
// a container timestamp), or gwrap's own JSON output (gunicorn.log events), mixed or not.
func Explain(r io.Reader) (*Explanation, error) {
	x := &explainer{ex: &Explanation{Counts: map[string]int{}, Incidents: []LogIncident{}, Workers: []WorkerTimeline{}, Warnings: []string{}},
		open: map[int]*LogIncident{}, timelines: map[int]*WorkerTimeline{}, boots: map[int]time.Time{}, ended: map[int]bool{}, requests: map[int]Event{},
		dirtyTB: map[int][]string{}}
	a := NewAssembler(200, 64<<10)
	lr := lineReader{br: bufio.NewReaderSize(r, 64<<10), max: MaxExplainLine}
	cuts := 0
	for {
		line, cut, err := lr.next()
		if cut > 0 {
			cuts++
			if cuts <= maxCutWarnings {
				x.ex.Warnings = append(x.ex.Warnings, fmt.Sprintf("line %d is longer than %d bytes: its last %d bytes were not read", x.ex.Lines+1, MaxExplainLine, cut))
			}
			line = append(line, cutMark...)
		}
		if len(line) > 0 {
			line = trimEOL(line)
			x.ex.Lines++
			ev, done := a.Add(unwrapJSON(line))
			if ev.Kind == KindRaw {
				x.configLine(ev.Line)
				x.debugRequest(ev)
			}
			for _, ev := range done {
				x.event(ev)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the log: %w", err)
		}
	}
	if cuts > maxCutWarnings {
		x.ex.Warnings = append(x.ex.Warnings, fmt.Sprintf("%d lines in all were longer than %d bytes and cut", cuts, MaxExplainLine))
	}
	for _, ev := range a.Flush() {
		x.event(ev)
	}
	x.finish()
	return x.ex, nil
}

// MaxExplainLine is the longest line explain reads whole: Gunicorn's lines are short, and a log
// with an endless line (or /dev/zero) must cost explain no more memory than this.
const MaxExplainLine = 1 << 20

const maxCutWarnings = 5

// cutMark ends a line that was cut.
const cutMark = " [gwrap: line cut]"

// lineReader reads lines of any length in bounded memory: a line longer than max is cut there
// and the rest of it skipped (counted).
type lineReader struct {
	br  *bufio.Reader
	max int
	buf []byte
}

// next returns the next line with its end, valid until the next call; cut is how many bytes of
// it were skipped; err is io.EOF after the last line.
func (l *lineReader) next() (line []byte, cut int64, err error) {
	if cap(l.buf) > 64<<10 {
		l.buf = nil // a long line's buffer is not kept
	}
	l.buf = l.buf[:0]
	for {
		chunk, err := l.br.ReadSlice('\n')
		room := l.max - len(l.buf)
		if len(chunk) > room {
			cut += int64(len(chunk) - room)
			chunk = chunk[:room]
		}
		l.buf = append(l.buf, chunk...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == nil && cut > 0 {
			cut-- // the newline is not the line's
		}
		return l.buf, cut, err
	}
}

func trimEOL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// unwrapJSON returns the original line of a gwrap gunicorn.log JSON event, else the line.
func unwrapJSON(line []byte) []byte {
	if len(line) == 0 || line[0] != '{' {
		return line
	}
	var ev struct {
		Event string `json:"event"`
		Line  string `json:"line"`
	}
	if json.Unmarshal(line, &ev) == nil && ev.Event == "gunicorn.log" {
		return []byte(ev.Line)
	}
	return line
}

type explainer struct {
	ex        *Explanation
	open      map[int]*LogIncident // the latest incident per worker pid
	timelines map[int]*WorkerTimeline
	boots     map[int]time.Time
	order     []int
	made      []*LogIncident // every incident, in the order made
	ended     map[int]bool   // workers whose end the log tells (exiting, a signal, an exit code)
	shutdown  bool           // the master logged "Shutting down"
	modern    bool           // a 21+ reap line ("Worker (pid:N) …") was seen
	requests  map[int]Event  // the last request each worker logged at debug level

	dirtyTB   map[int][]string // a dirty worker's boot traceback, until the arbiter's line about it
	dirtyLoop *LogIncident     // the first boot failure of a dirty boot loop
}

func (x *explainer) timeline(pid int, at time.Time, what string) {
	tl := x.timelines[pid]
	if tl == nil {
		tl = &WorkerTimeline{PID: pid}
		x.timelines[pid] = tl
		x.order = append(x.order, pid)
	}
	tl.Events = append(tl.Events, clock(at)+" "+what)
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "--:--:--"
	}
	return t.Format("15:04:05")
}

func (x *explainer) incident(pid int, at time.Time, kind string, line string) *LogIncident {
	inc := &LogIncident{PID: pid, Kind: kind, at: at, Lines: []string{line}}
	if !at.IsZero() {
		inc.At = at.Format(time.RFC3339)
	}
	x.made = append(x.made, inc)
	x.open[pid] = inc
	return inc
}

func (x *explainer) event(ev Event) {
	if ev.IsDirty() {
		x.dirtyEvent(ev)
		return
	}
	pid := ev.WorkerPID
	switch ev.Kind {
	case KindWorkerExiting, KindSignaled, KindExited:
		x.ended[pid] = true
		x.modern = x.modern || strings.Contains(ev.Message, "Worker (pid:")
	case KindShuttingDown:
		x.shutdown = true
	}
	switch ev.Kind {
	case KindStarting:
		x.ex.Version = ev.Version
	case KindUsingWorker:
		x.ex.WorkerClass = ev.WorkerClass
	case KindBooting:
		x.ex.Counts["booted"]++
		x.boots[pid] = ev.Time
		x.timeline(pid, ev.Time, "booted")
	case KindTimeout:
		x.ex.Counts["timeout"]++
		x.timeline(pid, ev.Time, "WORKER TIMEOUT (SIGABRT sent)")
		inc := x.incident(pid, ev.Time, "timeout", ev.Line)
		if r, ok := x.requests[pid]; ok && !r.Time.IsZero() && !ev.Time.IsZero() {
			inc.Request, inc.RequestSeconds = r.Message, int(ev.Time.Sub(r.Time)/time.Second)
		}
	case KindWorkerExiting:
		x.timeline(pid, ev.Time, "exiting")
		if inc := x.open[pid]; inc != nil && inc.Kind == "timeout" {
			inc.HandledAbort = true
			inc.Lines = append(inc.Lines, ev.Line)
		}
	case KindRequestError:
		if inc := x.open[ev.PID]; inc != nil && inc.Kind == "timeout" {
			inc.Lines = append(inc.Lines, ev.Line)
			inc.Traceback = ev.Traceback
			inc.StuckAt = StuckAt(ev.Traceback)
		}
	case KindWorkerError:
		x.timeline(ev.PID, ev.Time, "exception in worker process")
		if ev.PID != 0 {
			inc := x.incident(ev.PID, ev.Time, "boot_failure", ev.Line)
			inc.Traceback = ev.Traceback
		}
	case KindSignaled:
		x.timeline(pid, ev.Time, "died of "+ev.SignalName)
		if inc := x.open[pid]; inc != nil && inc.Kind == "timeout" && inc.Signal == "" {
			inc.Signal = ev.SignalName
			inc.TimeoutEscalation = ev.Signal == 9
			inc.Lines = append(inc.Lines, ev.Line)
			return
		}
		if ev.Signal == 15 {
			return // SIGTERM from Gunicorn itself: a reload or a scale-down, not a kill
		}
		x.ex.Counts["signal"]++
		inc := x.incident(pid, ev.Time, "signal", ev.Line)
		inc.Signal = ev.SignalName
		inc.PossibleOOM = ev.Signal == 9
	case KindExited:
		if ev.Repeat {
			return
		}
		x.timeline(pid, ev.Time, fmt.Sprintf("exited with code %d", ev.ExitCode))
		code := ev.ExitCode
		if inc := x.open[pid]; inc != nil && (inc.Kind == "timeout" || inc.Kind == "boot_failure") && inc.ExitCode == nil {
			inc.ExitCode = &code
			inc.Lines = append(inc.Lines, ev.Line)
			return
		}
		kind := "exit"
		if code == 3 || code == 4 {
			kind = "boot_failure"
		}
		x.ex.Counts[kind]++
		inc := x.incident(pid, ev.Time, kind, ev.Line)
		inc.ExitCode = &code
	case KindReason:
		x.ex.Warnings = append(x.ex.Warnings, "Gunicorn shut down: "+ev.Reason)
	}
}

// StuckAt picks, in a traceback of a worker aborted by Gunicorn's timeout (22+: "Error handling
// request" with the request's stack), the app's innermost frame and its source line: where the
// worker was stuck. "" when no frame outside Gunicorn is found.
func StuckAt(tb []string) string {
	last := ""
	for i, l := range tb {
		t := strings.TrimSpace(l)
		if !strings.HasPrefix(t, "File ") {
			continue
		}
		if strings.Contains(t, "/gunicorn/") {
			continue
		}
		last = t
		if i+1 < len(tb) && !strings.HasPrefix(strings.TrimSpace(tb[i+1]), "File ") {
			last += ": " + strings.TrimSpace(tb[i+1])
		}
	}
	return last
}

// configLine reads the timeout from the "Current configuration:" dump that --log-level debug
// writes at start-up, one "  name: value" line per setting.
func (x *explainer) configLine(line string) {
	if v, ok := strings.CutPrefix(line, "  timeout: "); ok {
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			x.ex.Timeout = n
		}
	}
}

// debugRequest remembers the request line a worker logs at debug level ("GET /sleep") when it
// starts serving a request: the one a later WORKER TIMEOUT interrupted.
func (x *explainer) debugRequest(ev Event) {
	if ev.Level != "DEBUG" || ev.PID == 0 {
		return
	}
	method, path, ok := strings.Cut(ev.Message, " ")
	if !ok || len(method) < 3 || len(method) > 7 || strings.ToUpper(method) != method || !strings.HasPrefix(path, "/") {
		return
	}
	x.requests[ev.PID] = ev
}

func (x *explainer) finish() {
	atDefault := 0
	for _, inc := range x.made {
		if inc.Kind == "timeout" && inc.Request != "" && inc.RequestSeconds >= 30 && inc.RequestSeconds <= 32 && (x.ex.Timeout == 0 || x.ex.Timeout == 30) {
			atDefault++
			x.ex.Warnings = append(x.ex.Warnings, fmt.Sprintf("worker %d timed out %d s into %s: that is Gunicorn's default 30 s timeout, so --timeout was probably never set; set it to what the slowest request needs (e.g. --timeout 120), or move the work out of the request", inc.PID, inc.RequestSeconds, inc.Request))
		}
	}
	if x.ex.Timeout == 30 && x.ex.Counts["timeout"] > 0 && atDefault == 0 {
		x.ex.Warnings = append(x.ex.Warnings, fmt.Sprintf("%d worker timeout(s) at Gunicorn's default --timeout 30 (the log's configuration dump says timeout: 30): it was never set; set it to what the slowest request or boot needs, e.g. --timeout 120", x.ex.Counts["timeout"]))
	}
	for _, inc := range x.made {
		inc.Explanation = explainIncident(inc, x.ex.Version)
		x.ex.Incidents = append(x.ex.Incidents, *inc)
		if inc.Kind == "timeout" && inc.Request == "" { // a worker serving a request had booted
			if boot, ok := x.boots[inc.PID]; ok && !boot.IsZero() && !inc.at.IsZero() {
				if d := inc.at.Sub(boot); d >= 30*time.Second && d <= 33*time.Second {
					x.ex.Warnings = append(x.ex.Warnings, fmt.Sprintf("worker %d timed out %v after booting: that is Gunicorn's default 30 s timeout, and perhaps a slow boot (app import, model load); set --timeout, or --preload to load the app once in the master", inc.PID, d))
				}
			}
		}
		if inc.Kind == "boot_failure" && inc.Role == "" {
			x.ex.Warnings = append(x.ex.Warnings, fmt.Sprintf("worker %d failed to boot: see its traceback; Gunicorn stops when a worker cannot load the app", inc.PID))
		}
	}
	x.vanished()
	for _, pid := range x.order {
		x.ex.Workers = append(x.ex.Workers, *x.timelines[pid])
	}
}

// vanished finds the workers that died without a line. When the master shut down in the log,
// every worker still alive said "Worker exiting"; a worker that booted and said nothing more
// died before, unlogged: Gunicorn ≤ 20.1 logs no exit code, 19.9 not even a signal. (21+ logs
// both, and its workers may end quietly with code 0: no inference there.)
func (x *explainer) vanished() {
	if !x.shutdown || x.modern || !before21(x.ex.Version) {
		return
	}
	for _, pid := range x.order {
		if _, booted := x.boots[pid]; !booted || x.ended[pid] || x.open[pid] != nil {
			continue
		}
		x.ex.Counts["vanished"]++
		x.timelines[pid].Events = append(x.timelines[pid].Events, "--:--:-- died, unlogged")
		x.ex.Warnings = append(x.ex.Warnings, fmt.Sprintf("worker %d booted at %s and died before the shutdown without a line: Gunicorn %s does not log a worker's non-zero exit code (an exception that escaped, os._exit, sys.exit)%s; a supervised run would have seen it", pid, clock(x.boots[pid]), x.versionOr("up to 20.1"), x.signalNote()))
	}
}

func (x *explainer) versionOr(s string) string {
	if x.ex.Version != "" {
		return x.ex.Version
	}
	return s
}

// before21 says whether a release (as "Starting gunicorn" prints it) is older than 21.0; an
// unknown one ("") may be.
func before21(v string) bool {
	major, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(major)
	return v == "" || (err == nil && n < 21)
}

// signalNote adds what else a silent death may be, by release.
func (x *explainer) signalNote() string {
	if v := x.ex.Version; v == "" || strings.HasPrefix(v, "19.") || strings.HasPrefix(v, "20.0") {
		return " nor, before 20.1, a death by signal (a SIGKILL from the OOM killer, a segfault)"
	}
	return ""
}

// explainIncident says in plain words what the log alone tells about one kill.
func explainIncident(inc *LogIncident, version string) string {
	if inc.Role != "" {
		return explainDirty(inc)
	}
	var b strings.Builder
	switch inc.Kind {
	case "timeout":
		b.WriteString("Gunicorn's timeout: the worker did not heartbeat within --timeout, so the master logged WORKER TIMEOUT and sent SIGABRT.")
		switch {
		case inc.TimeoutEscalation:
			b.WriteString(" It did not exit, so the master SIGKILLed it a second later. That SIGKILL was Gunicorn's own escalation, NOT an out-of-memory kill, whatever \"Perhaps out of memory?\" says: the worker was stuck where a Python signal handler cannot run (C code holding the GIL, a blocking call).")
		case inc.Signal == "SIGABRT":
			b.WriteString(" It died of the SIGABRT at once (the default action: Uvicorn workers and C code that resets the handler do this).")
		case inc.HandledAbort:
			b.WriteString(" It handled the SIGABRT and exited.")
		case version != "" && (strings.HasPrefix(version, "19.") || strings.HasPrefix(version, "20.0")):
			b.WriteString(" Gunicorn " + version + " does not log what followed: if the next worker booted about a second later without a \"Worker exiting\" line, the master SIGKILLed it.")
		}
		if inc.StuckAt != "" {
			b.WriteString(" It was stuck at " + inc.StuckAt + ".")
		}
		b.WriteString(" Whether it was computing, waiting, or short of memory or CPU the log cannot say: run Gunicorn under gwrap to know.")
	case "signal":
		fmt.Fprintf(&b, "The worker died of %s with no WORKER TIMEOUT before it.", inc.Signal)
		if inc.PossibleOOM {
			b.WriteString(" A SIGKILL that Gunicorn did not send is most often the kernel's OOM killer (or the platform, or a person): the cgroup's oom_kill counter would tell, and gwrap reads it when it supervises Gunicorn.")
		} else {
			b.WriteString(" The worker crashed (a fault in C code, an abort) or something sent it that signal.")
		}
	case "exit":
		fmt.Fprintf(&b, "The worker exited with code %d: the app or a library called exit, or an exception escaped the worker.", *inc.ExitCode)
	case "boot_failure":
		b.WriteString("The worker failed to boot: an exception while importing or loading the app (see the traceback).")
	}
	return b.String()
}

// WriteJSON prints the explanation as one JSON object.
func (e *Explanation) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(e)
}

// WriteText prints the explanation for people.
func (e *Explanation) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	ver := e.Version
	if ver == "" {
		ver = "(version not in the log)"
	}
	fmt.Fprintf(bw, "Gunicorn %s", ver)
	if e.WorkerClass != "" {
		fmt.Fprintf(bw, ", worker class %s", e.WorkerClass)
	}
	fmt.Fprintf(bw, ", %d lines.\n", e.Lines)
	keys := make([]string, 0, len(e.Counts))
	for k := range e.Counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, e.Counts[k]))
	}
	fmt.Fprintf(bw, "Counts: %s.\n", strings.Join(parts, ", "))
	if len(e.Incidents) == 0 {
		fmt.Fprintln(bw, "\nNo worker was killed.")
	} else {
		fmt.Fprintf(bw, "\nWorker kills (%d):\n", len(e.Incidents))
	}
	for _, inc := range e.Incidents {
		at := inc.At
		if at == "" {
			at = "(no time)"
		}
		label := inc.Kind
		if inc.Role != "" {
			label = inc.Role + " " + label
		}
		switch {
		case inc.TimeoutEscalation:
			label += " + SIGKILL escalation"
		case inc.PossibleOOM:
			label += " (possible OOM kill)"
		case inc.Signal != "":
			label += " " + inc.Signal
		}
		fmt.Fprintf(bw, "\n  pid %d at %s: %s\n", inc.PID, at, label)
		if inc.Request != "" {
			fmt.Fprintf(bw, "    serving %s for %d s\n", inc.Request, inc.RequestSeconds)
		}
		fmt.Fprintf(bw, "    %s\n", inc.Explanation)
		for _, l := range inc.Lines {
			fmt.Fprintf(bw, "    | %s\n", l)
		}
	}
	if len(e.Warnings) > 0 {
		fmt.Fprintln(bw, "\nWarnings:")
		for _, wn := range e.Warnings {
			fmt.Fprintf(bw, "  - %s\n", wn)
		}
	}
	if len(e.Workers) > 0 {
		fmt.Fprintln(bw, "\nPer-worker timeline:")
		for _, tl := range e.Workers {
			fmt.Fprintf(bw, "  %d: %s\n", tl.PID, strings.Join(tl.Events, ", "))
		}
	}
	return bw.Flush()
}
