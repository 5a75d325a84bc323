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
	end := 0
	for end < len(s) && isDigit(s[end]) {
		end++
	}
	if end == 0 || end > 9 {
		return 0, false
	}
	n, _ := strconv.Atoi(s[:end])
	return n, true
}

// after returns what follows the first occurrence of marker in s.
func after(s, marker string) (string, bool) {
	i := strings.Index(s, marker)
	if i < 0 {
		return "", false
	}
	return s[i+len(marker):], true
}

// match recognises the messages of every release (GUNICORN.md §1.2 lists them, with versions).
func match(ev *Event, msg string) {
	if rest, ok := after(msg, "WORKER TIMEOUT (pid:"); ok {
		if pid, ok := leadingInt(rest); ok {
			ev.Kind, ev.WorkerPID = KindTimeout, pid
		}
		return
	}
	if rest, ok := after(msg, "Booting worker with pid: "); ok {
		if pid, ok := leadingInt(rest); ok {
			ev.Kind, ev.WorkerPID = KindBooting, pid
		}
		return
	}
	if rest, ok := after(msg, "Worker exiting (pid: "); ok {
		if pid, ok := leadingInt(rest); ok {
			ev.Kind, ev.WorkerPID = KindWorkerExiting, pid
		}
		return
	}
	// 20.1 only: Worker with pid N was terminated due to signal S
	if rest, ok := after(msg, "Worker with pid "); ok {
		pid, ok1 := leadingInt(rest)
		sig, ok2 := after(rest, " was terminated due to signal ")
		if n, ok3 := leadingInt(sig); ok1 && ok2 && ok3 {
			ev.Kind, ev.WorkerPID, ev.Signal, ev.SignalName = KindSignaled, pid, n, signalName(n)
		}
		return
	}
	// 21+: Worker (pid:N) was sent SIGX! [Perhaps out of memory?] / was sent code 134! /
	// exited with code C[.]
	if rest, ok := after(msg, "Worker (pid:"); ok {
		pid, ok := leadingInt(rest)
		if !ok {
			return
		}
		if sent, ok := after(rest, ") was sent "); ok {
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
			return
		}
		if code, ok := after(rest, ") exited with code "); ok {
			if n, ok := leadingInt(code); ok {
				ev.Kind, ev.WorkerPID, ev.ExitCode = KindExited, pid, n
			}
		}
		return
	}
	if rest, ok := after(msg, "Error handling request"); ok {
		ev.Kind = KindRequestError
		rest = strings.TrimSpace(rest)
		if rest == "(no URI read)" || rest == "" {
			return
		}
		if m, u, ok := strings.Cut(rest, " "); ok && m == strings.ToUpper(m) && !strings.Contains(u, " ") {
			ev.Method, ev.URI = m, u
			return
		}
		ev.URI = rest
		return
	}
	if rest, ok := after(msg, "Starting gunicorn "); ok {
		ev.Kind, ev.Version = KindStarting, strings.TrimSpace(rest)
		return
	}
	if rest, ok := after(msg, "Listening at: "); ok {
		ev.Kind = KindListening
		if i := strings.LastIndex(rest, " ("); i >= 0 && strings.HasSuffix(rest, ")") {
			rest = rest[:i]
		}
		ev.Listeners = strings.Split(rest, ",")
		return
	}
	if rest, ok := after(msg, "Using worker: "); ok {
		ev.Kind, ev.WorkerClass = KindUsingWorker, strings.TrimSpace(rest)
		return
	}
	if rest, ok := after(msg, "Handling signal: "); ok {
		ev.Kind, ev.SignalIn = KindHandlingSignal, strings.TrimSpace(rest)
		return
	}
	if _, ok := after(msg, "Hang up: "); ok {
		ev.Kind = KindHangUp
		return
	}
	if _, ok := after(msg, "Shutting down: "); ok {
		ev.Kind = KindShuttingDown
		return
	}
	if rest, ok := strings.CutPrefix(msg, "Reason: "); ok {
		ev.Kind, ev.Reason = KindReason, strings.TrimSpace(rest)
		return
	}
	if strings.Contains(msg, "Exception in worker process") {
		ev.Kind = KindWorkerError
		return
	}
	if strings.Contains(msg, "Unhandled exception in main loop") {
		ev.Kind = KindMasterError
		return
	}
	if strings.Contains(msg, "Autorestarting worker after current request") {
		ev.Kind = KindAutorestart
		return
	}
	if rest, ok := after(msg, "Worker graceful timeout (pid:"); ok {
		if pid, ok := leadingInt(rest); ok {
			ev.Kind, ev.WorkerPID = KindGracefulTimeout, pid
		}
	}
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
