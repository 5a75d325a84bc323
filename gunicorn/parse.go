package gunicorn

import (
	"bytes"
	"strconv"
	"strings"
	"time"
)

// scanLimit bounds how much of a line the message matchers look at: every message gwrap cares
// about is short, and a 1 MiB line must not cost a dozen 1 MiB scans.
const scanLimit = 8 << 10

// ParseLine says what one log line means. It never fails: a line it does not know is KindRaw.
//
// The standard prefix `[%Y-%m-%d %H:%M:%S %z] [PID] [LEVEL] ` is parsed where it starts the line
// or follows another prefix (App Service's container timestamp, a JSON wrapper); message texts are
// matched anywhere, because log configs reformat lines. Access-log lines are recognised first and
// never read as error-log messages.
func ParseLine(line []byte) Event {
	ev := Event{Kind: KindRaw, Line: string(line)}
	msg := ev.Line
	if i := prefixStart(line); i >= 0 {
		if t, pid, level, rest, ok := parsePrefix(ev.Line[i:]); ok {
			ev.Time, ev.PID, ev.Level, msg = t, pid, level, rest
		}
	}
	if ev.PID == 0 && isAccessLine(line) {
		ev.Kind = KindAccess
		return ev
	}
	ev.Message = msg
	if len(msg) > scanLimit {
		msg = msg[:scanLimit]
	}
	match(&ev, msg)
	return ev
}

// prefixStart finds where a standard prefix may start: at 0, or at the first "[" followed by a
// digit within the first 64 bytes.
func prefixStart(line []byte) int {
	n := min(len(line), 64)
	for i := 0; i < n-1; i++ {
		if line[i] == '[' && line[i+1] >= '0' && line[i+1] <= '9' {
			return i
		}
	}
	return -1
}

// parsePrefix parses `[2026-11-25 03:42:30 +0000] [3679] [INFO] rest`.
func parsePrefix(s string) (time.Time, int, string, string, bool) {
	const tsLen = len("[2026-11-25 03:42:30 +0000]")
	if len(s) < tsLen+6 || s[0] != '[' || s[tsLen-1] != ']' || s[tsLen] != ' ' {
		return time.Time{}, 0, "", "", false
	}
	t, err := time.Parse("2006-01-02 15:04:05 -0700", s[1:tsLen-1])
	if err != nil {
		return time.Time{}, 0, "", "", false
	}
	rest := s[tsLen+1:]
	pidStr, rest, ok := bracketed(rest)
	if !ok {
		return time.Time{}, 0, "", "", false
	}
	pid, err := strconv.Atoi(pidStr)
	if err != nil {
		return time.Time{}, 0, "", "", false
	}
	level, rest, ok := bracketed(rest)
	if !ok || level == "" || strings.ToUpper(level) != level {
		return time.Time{}, 0, "", "", false
	}
	return t, pid, level, rest, true
}

// bracketed splits "[x] rest" into x and rest.
func bracketed(s string) (string, string, bool) {
	if len(s) < 2 || s[0] != '[' {
		return "", "", false
	}
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return "", "", false
	}
	in := s[1:end]
	rest := s[end+1:]
	rest = strings.TrimPrefix(rest, " ")
	return in, rest, true
}

// isAccessLine recognises Gunicorn's default access-log format:
// `%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"`, e.g.
// `127.0.0.1 - - [25/Nov/2026:03:42:30 +0000] "GET / HTTP/1.1" 200 3 "-" "curl/8"`.
func isAccessLine(line []byte) bool {
	i := bytes.Index(line, []byte(" ["))
	if i <= 0 || i > 300 || len(line) < i+30 {
		return false
	}
	t := line[i+2:]
	// dd/Mon/yyyy:hh:mm:ss
	if !(isDigit(t[0]) && isDigit(t[1]) && t[2] == '/' && t[6] == '/' && t[11] == ':') {
		return false
	}
	return bytes.Contains(line[i:], []byte(`] "`))
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

// leadingInt parses the decimal number at the start of s.
func leadingInt(s string) (int, bool) {
	n, _, ok := cutInt(s)
	return n, ok
}

// cutPID parses a pid (a positive number: 0 would mean "unknown" in an Event) at the start of s.
func cutPID(s string) (int, string, bool) {
	n, rest, ok := cutInt(s)
	return n, rest, ok && n > 0
}

// cutInt parses the decimal number at the start of s and returns what follows it.
func cutInt(s string) (int, string, bool) {
	end := 0
	for end < len(s) && isDigit(s[end]) {
		end++
	}
	if end == 0 || end > 9 {
		return 0, s, false
	}
	n, _ := strconv.Atoi(s[:end])
	return n, s[end:], true
}

// marker is a text that identifies one of Gunicorn's messages (messages below lists them;
// testdata/logs holds each release's lines) and the parser of what follows it: false when it
// does not parse (the text was not that message). atStart says the marker begins the message.
type marker struct {
	text  string
	parse func(ev Event, rest string, atStart bool) (Event, bool)
}

// messages are every message gwrap reads (dirtyMessages are in dirty.go).
var messages = []marker{
	{"WORKER TIMEOUT (pid:", workerPID(KindTimeout)},
	{"Worker exiting (pid: ", workerPID(KindWorkerExiting)},
	{"Worker with pid ", terminated},
	{"Worker (pid:", workerEnded},
	{"Worker graceful timeout (pid:", workerPID(KindGracefulTimeout)},
	{"Booting worker with pid: ", workerPID(KindBooting)},
	{"Error handling request", requestError},
	{"Exception in worker process", kind(KindWorkerError)},
	{"Starting gunicorn ", func(ev Event, rest string, _ bool) (Event, bool) {
		ev.Kind, ev.Version = KindStarting, strings.TrimSpace(rest)
		return ev, true
	}},
	{"Shutting down: ", kind(KindShuttingDown)},
	{"Listening at: ", listening},
	{"Using worker: ", func(ev Event, rest string, _ bool) (Event, bool) {
		ev.Kind, ev.WorkerClass = KindUsingWorker, strings.TrimSpace(rest)
		return ev, true
	}},
	{"Unhandled exception in main loop", kind(KindMasterError)},
	{"Handling signal: ", func(ev Event, rest string, _ bool) (Event, bool) {
		ev.Kind, ev.SignalIn = KindHandlingSignal, strings.TrimSpace(rest)
		return ev, true
	}},
	{"Hang up: ", kind(KindHangUp)},
	{"Reason: ", reason},
	{"Autorestarting worker after current request", kind(KindAutorestart)},
}

// markers are the messages by the first byte of their marker: one pass over a line finds the
// leftmost marker, so a line that holds none costs a table lookup a byte, and the marker found
// is parsed by its own parser, with no second dispatch on its text.
var markers = func() (t [256][]marker) {
	for _, m := range append(messages, dirtyMessages...) {
		t[m.text[0]] = append(t[m.text[0]], m)
	}
	return t
}()

// markerStart says which bytes begin a marker: the scan of a line that holds none reads this
// small table only.
var markerStart = func() (t [256]bool) {
	for b, ms := range markers {
		t[b] = len(ms) > 0
	}
	return t
}()

// match recognises the message in msg: the leftmost marker whose message parses wins.
func match(ev *Event, msg string) {
	for i := 0; i < len(msg); i++ {
		if !markerStart[msg[i]] {
			continue
		}
		for _, m := range markers[msg[i]] {
			if !strings.HasPrefix(msg[i:], m.text) {
				continue
			}
			// By value: an *Event handed to a parser held in a table would escape to the heap.
			if parsed, ok := m.parse(*ev, msg[i+len(m.text):], i == 0); ok {
				*ev = parsed
				return
			}
		}
	}
}

// kind parses a message that is all its marker.
func kind(k Kind) func(Event, string, bool) (Event, bool) {
	return func(ev Event, _ string, _ bool) (Event, bool) { ev.Kind = k; return ev, true }
}

// workerPID parses a message whose marker is followed by the worker's pid.
func workerPID(k Kind) func(Event, string, bool) (Event, bool) {
	return func(ev Event, rest string, _ bool) (Event, bool) {
		pid, _, ok := cutPID(rest)
		if !ok {
			return ev, false
		}
		ev.Kind, ev.WorkerPID = k, pid
		return ev, true
	}
}

// terminated is 20.1's "Worker with pid N was terminated due to signal S".
func terminated(ev Event, rest string, _ bool) (Event, bool) {
	pid, after, ok := cutPID(rest)
	if !ok {
		return ev, false
	}
	sig, ok := strings.CutPrefix(after, " was terminated due to signal ")
	n, ok2 := leadingInt(sig)
	if !ok || !ok2 {
		return ev, false
	}
	ev.Kind, ev.WorkerPID, ev.Signal, ev.SignalName = KindSignaled, pid, n, signalName(n)
	return ev, true
}

// workerEnded is 21+'s "Worker (pid:N) was sent SIGX! [Perhaps out of memory?]", "… was sent
// code 134!" and "… exited with code C[.]".
func workerEnded(ev Event, rest string, _ bool) (Event, bool) {
	pid, rest, ok := cutPID(rest)
	if !ok {
		return ev, false
	}
	if sent, ok := strings.CutPrefix(rest, ") was sent "); ok {
		name, _, _ := strings.Cut(sent, "!")
		ev.Kind, ev.WorkerPID = KindSignaled, pid
		if code, ok := strings.CutPrefix(name, "code "); ok {
			// The core-dump bit broke the name lookup (#3403): status 134 = SIGABRT + core.
			if n, ok := leadingInt(code); ok {
				ev.CoreDump = n&0x80 != 0
				ev.Signal = n & 0x7f
				ev.SignalName = signalName(ev.Signal)
			}
		} else {
			ev.SignalName = name
			ev.Signal = signalNumber(name)
		}
		ev.OOMHint = strings.Contains(sent, "Perhaps out of memory?")
		return ev, true
	}
	code, ok := strings.CutPrefix(rest, ") exited with code ")
	n, ok2 := leadingInt(code)
	if !ok || !ok2 {
		return ev, false
	}
	ev.Kind, ev.WorkerPID, ev.ExitCode = KindExited, pid, n
	return ev, true
}

// requestError is "Error handling request [METHOD URI | URI | (no URI read)]".
func requestError(ev Event, rest string, _ bool) (Event, bool) {
	ev.Kind = KindRequestError
	rest = strings.TrimSpace(rest)
	if rest == "(no URI read)" || rest == "" {
		return ev, true
	}
	if m, u, ok := strings.Cut(rest, " "); ok && m == strings.ToUpper(m) && !strings.Contains(u, " ") {
		ev.Method, ev.URI = m, u
		return ev, true
	}
	ev.URI = rest
	return ev, true
}

// listening is "Listening at: URL[,URL…] (PID)".
func listening(ev Event, rest string, _ bool) (Event, bool) {
	ev.Kind = KindListening
	if i := strings.LastIndex(rest, " ("); i >= 0 && strings.HasSuffix(rest, ")") {
		rest = rest[:i]
	}
	ev.Listeners = strings.Split(rest, ",")
	return ev, true
}

// reason is the master's "Reason: …": anywhere for Gunicorn's own reasons, else only as the
// whole message.
func reason(ev Event, rest string, atStart bool) (Event, bool) {
	if !atStart && !strings.HasPrefix(rest, "Worker failed to boot.") && !strings.HasPrefix(rest, "App failed to load.") {
		return ev, false
	}
	ev.Kind, ev.Reason = KindReason, strings.TrimSpace(rest)
	return ev, true
}

// Linux signal numbers by name, for the names Gunicorn prints.
var signalNumbers = map[string]int{
	"SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6, "SIGBUS": 7,
	"SIGFPE": 8, "SIGKILL": 9, "SIGUSR1": 10, "SIGSEGV": 11, "SIGUSR2": 12, "SIGPIPE": 13,
	"SIGALRM": 14, "SIGTERM": 15, "SIGCHLD": 17, "SIGXCPU": 24, "SIGXFSZ": 25, "SIGSYS": 31,
}

func signalNumber(name string) int { return signalNumbers[name] }

func signalName(n int) string {
	for k, v := range signalNumbers {
		if v == n {
			return k
		}
	}
	return "signal " + strconv.Itoa(n)
}
