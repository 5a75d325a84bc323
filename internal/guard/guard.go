// Package guard keeps a panic in one of gwrap's monitoring parts (the engine, the worker
// watcher, the report store, the flight record…) from taking PID 1, and with it the app, down.
// Run recovers the panic and tells what panicked and where; the caller says so once and runs on
// with that part off or restarted. Supervision itself (spawn, wait4, signals, the relay) is never
// what panics here: it calls the monitoring parts through guards.
package guard

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"unicode/utf8"
)

// Panic is a recovered panic of one part.
type Panic struct {
	Part    string // the part that panicked, as the caller named it
	Message string // the panic's value as text, at most maxMessage bytes
	Where   string // the panicking function: "engine/state.go:123 in (*state).line"
}

func (p *Panic) Error() string {
	return fmt.Sprintf("%s panicked: %s (at %s)", p.Part, p.Message, p.Where)
}

// maxMessage bounds the message kept: a panic's value may hold the app's text.
const maxMessage = 512

// Run calls f and returns nil, or the panic f raised, recovered.
func Run(part string, f func()) (p *Panic) {
	defer func() {
		if v := recover(); v != nil {
			p = &Panic{Part: part, Message: message(v), Where: where()}
		}
	}()
	f()
	return nil
}

func message(v any) string {
	s := fmt.Sprint(v)
	if len(s) > maxMessage {
		s = strings.ToValidUTF8(s[:maxMessage], "") + "…"
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	return s
}

// where finds the frame that panicked: the first one below runtime.gopanic that is not the
// runtime's own (a nil dereference or an index out of range goes through runtime.sigpanic or
// runtime.panicIndex). It must be called from Run's deferred function.
func where() string {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(1, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	panicking := false
	for {
		fr, more := frames.Next()
		switch {
		case fr.Function == "runtime.gopanic":
			panicking = true
		case panicking && !strings.HasPrefix(fr.Function, "runtime."):
			return fmt.Sprintf("%s:%d in %s", shortFile(fr.File), fr.Line, shortFunc(fr.Function))
		}
		if !more {
			return "unknown"
		}
	}
}

// shortFile keeps a source file's package directory and name: engine/state.go.
func shortFile(f string) string {
	return filepath.Join(filepath.Base(filepath.Dir(f)), filepath.Base(f))
}

// shortFunc drops the import path: github.com/gwrap/gwrap/engine.(*state).line → (*state).line.
func shortFunc(f string) string {
	if i := strings.LastIndexByte(f, '/'); i >= 0 {
		f = f[i+1:]
	}
	if i := strings.IndexByte(f, '.'); i >= 0 {
		f = f[i+1:]
	}
	return f
}
