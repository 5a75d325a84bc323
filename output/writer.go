// Package output holds gwrap's outputs, the far end of the engine's typed port: the stdout writer
// (Writer: one JSON object per line, the contract, through a queue that never blocks its caller,
// and the one warn-once registry), the counts and the termination message (Counts: engine.Port,
// feeding /metrics and the last verdicts), and Fan, which hands each of the engine's events to
// both. cmd/gwrap only wires them.
package output

import (
	"encoding/base64"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/supervisor"
)

// Writer writes gwrap's stdout: one JSON object per line (the contract), or, with --log-format
// text, Gunicorn's lines as they were and gwrap's own events in a short human form. It is safe
// for concurrent use and never blocks its caller on stdout: every line is formatted (and
// timestamped) by the caller, when it happens, and handed to a lineQueue whose one writer
// goroutine writes them in order. Lines that cannot be written are counted (lost), said once on
// stderr, and reported in gwrap.exit.
type Writer struct {
	text bool
	q    *lineQueue
	log  zerolog.Logger

	onceMu sync.Mutex
	once   map[string]bool // the warn-once registry: the keys said
}

// maxMessage bounds the message of a relayed line the parser left without one (an access line):
// the whole line is in "line".
const maxMessage = 64 << 10

// NewWriter writes to w, in format "json" or "text", with the time from now; stderr gets the
// one-line notices when stdout fails.
func NewWriter(w, stderr io.Writer, format string, now func() time.Time) *Writer {
	q := newLineQueue(w, func(msg string) { go fmt.Fprintln(stderr, msg) })
	o := &Writer{text: format == "text", q: q, once: map[string]bool{}}
	var sink io.Writer = q
	if o.text {
		sink = zerolog.ConsoleWriter{Out: q, NoColor: true, TimeFormat: time.RFC3339,
			FieldsExclude: []string{"line"}, PartsOrder: []string{"time", "level", "event", "message"}}
	}
	// The logger's own clock, not zerolog's package globals (TimestampFunc, TimeFieldFormat):
	// two Writers (a test's, gwrap's) never share one. The time is the last field before the
	// message, where zerolog's Timestamp puts it.
	o.log = zerolog.New(sink).Hook(clock(now))
	return o
}

// clock stamps each event with now, in UTC, in RFC 3339 with nanoseconds.
type clock func() time.Time

// Run is zerolog.Hook's.
func (c clock) Run(e *zerolog.Event, _ zerolog.Level, _ string) {
	e.Str(zerolog.TimestampFieldName, c().UTC().Format(time.RFC3339Nano))
}

// Lost is how many lines did not reach stdout so far: dropped because the reader fell behind,
// and failed (EPIPE, ENOSPC).
func (o *Writer) Lost() uint64 {
	d, f := o.q.lost()
	return d + f
}

// Finish emits the last lines (last, normally gwrap.exit), which are queued whatever the bounds,
// waits at most d for stdout to take everything, and returns how many lines were lost in all.
// When some were, it says so on stderr (waiting at most d for stderr as well).
func (o *Writer) Finish(last func(), d time.Duration, stderr io.Writer) uint64 {
	o.q.finish(last, d)
	dropped, failed := o.q.lost()
	if dropped+failed > 0 {
		done := make(chan struct{})
		go func() {
			fmt.Fprintf(stderr, "gwrap: lines of output lost: %d (%d dropped because stdout fell behind, %d failed to write)\n", dropped+failed, dropped, failed)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(d):
		}
	}
	return dropped + failed
}

// event starts a gwrap event with the contract's fields; the caller adds fields and calls Msg.
func (o *Writer) event(level zerolog.Level, name string) *zerolog.Event {
	return o.log.WithLevel(level).Str("event", name)
}

// WarnOnce says a degradation once: a config.warning with its code (what degraded, one word a
// log query can match), the first time key is seen. key tells apart what is said once: a code
// may be said once per file or setting it names. The engine's warnings (engine.Warning) go
// through the same registry: a key is said once whoever says it.
func (o *Writer) WarnOnce(key, code, msg string) {
	o.Emit(engine.Event{Level: engine.Warn, Name: "config.warning", Message: msg,
		Fields: []engine.Field{{Key: "code", Value: code}}, Fact: engine.Warning{Key: key, Code: code}})
}

// first reports whether key is said for the first time, and notes it.
func (o *Writer) first(key string) bool {
	o.onceMu.Lock()
	defer o.onceMu.Unlock()
	seen := o.once[key]
	o.once[key] = true
	return !seen
}

// relay writes one of Gunicorn's lines. In JSON it is a gunicorn.log event with the original text
// in line (invalid UTF-8 is replaced there and the exact bytes are kept in line_b64), and the
// parsed pid and level where the line has them.
func (o *Writer) relay(s supervisor.Stream, line []byte, ev gunicorn.Event) {
	if o.text {
		buf := make([]byte, 0, len(line)+1)
		o.q.push(append(append(buf, line...), '\n'))
		return
	}
	// Bytes, not Str(string(line)): the same JSON, without a copy of a line that may be megabytes.
	e := o.log.WithLevel(gunicornLevel(ev.Level)).Str("event", "gunicorn.log").Str("stream", string(s)).
		Bytes("line", line)
	if !utf8.Valid(line) {
		e = e.Str("line_b64", base64.StdEncoding.EncodeToString(line))
	}
	if ev.PID != 0 {
		e = e.Int("gunicorn_pid", ev.PID)
	}
	if ev.Level != "" {
		e = e.Str("gunicorn_level", ev.Level)
	}
	if ev.Kind != gunicorn.KindRaw {
		e = e.Str("kind", string(ev.Kind))
	}
	msg := ev.Message
	if msg == "" {
		msg = string(line[:min(len(line), maxMessage)])
	}
	// zerolog leaves out an empty message; the contract wants the field on every line.
	e.Str(zerolog.MessageFieldName, msg).Send()
}

// gunicornLevel maps Python's level names to zerolog's.
func gunicornLevel(l string) zerolog.Level {
	switch strings.ToUpper(l) {
	case "DEBUG":
		return zerolog.DebugLevel
	case "WARNING", "WARN":
		return zerolog.WarnLevel
	case "ERROR":
		return zerolog.ErrorLevel
	case "CRITICAL":
		return zerolog.ErrorLevel
	default:
		return zerolog.InfoLevel
	}
}

// Relay is engine.Emitter's relay of one of Gunicorn's lines.
func (o *Writer) Relay(stream string, line []byte, parsed gunicorn.Event, _ time.Time) {
	o.relay(supervisor.Stream(stream), line, parsed)
}

// Emit is engine.Emitter's write of one of gwrap's events, its fields in order. A warning whose
// key was said is dropped (the warn-once registry).
func (o *Writer) Emit(e engine.Event) {
	if w, ok := e.Fact.(engine.Warning); ok && !o.first(w.Key) {
		return
	}
	level := zerolog.InfoLevel
	switch e.Level {
	case engine.Warn:
		level = zerolog.WarnLevel
	case engine.Error:
		level = zerolog.ErrorLevel
	}
	z := o.event(level, e.Name)
	for _, f := range e.Fields {
		switch v := f.Value.(type) {
		case string:
			z = z.Str(f.Key, v)
		case bool:
			z = z.Bool(f.Key, v)
		case int:
			z = z.Int(f.Key, v)
		case uint64:
			z = z.Uint64(f.Key, v)
		case float64:
			z = z.Float64(f.Key, v)
		case []string:
			z = z.Strs(f.Key, v)
		case []int:
			z = z.Ints(f.Key, v)
		default:
			z = z.Interface(f.Key, v)
		}
	}
	z.Msg(e.Message)
}
