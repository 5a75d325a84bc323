package main

import (
	"encoding/base64"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/supervisor"
)

// output writes gwrap's stdout: one JSON object per line (the contract), or, with --log-format
// text, Gunicorn's lines as they were and gwrap's own events in a short human form. It is safe
// for concurrent use: every line is one Write on a writer guarded by a mutex.
type output struct {
	text bool
	raw  io.Writer // the guarded writer, for raw text lines
	log  zerolog.Logger

	onceMu sync.Mutex
	once   map[string]bool
}

// lockedWriter serialises writes so that lines from the relay goroutines and the event loop never
// interleave, whatever the underlying writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func newOutput(w io.Writer, format string, now func() time.Time) *output {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	zerolog.TimestampFunc = func() time.Time { return now().UTC() }
	lw := &lockedWriter{w: w}
	o := &output{text: format == "text", raw: lw, once: map[string]bool{}}
	var sink io.Writer = lw
	if o.text {
		sink = zerolog.ConsoleWriter{Out: lw, NoColor: true, TimeFormat: time.RFC3339,
			FieldsExclude: []string{"line"}, PartsOrder: []string{"time", "level", "event", "message"}}
	}
	o.log = zerolog.New(sink).With().Timestamp().Logger()
	return o
}

// event starts a gwrap event with the contract's fields; the caller adds fields and calls Msg.
func (o *output) event(level zerolog.Level, name string) *zerolog.Event {
	return o.log.WithLevel(level).Str("event", name)
}

// warnOnce emits a warning event only the first time key is seen: gwrap says a degradation once.
func (o *output) warnOnce(key, name, msg string) {
	o.onceMu.Lock()
	seen := o.once[key]
	o.once[key] = true
	o.onceMu.Unlock()
	if !seen {
		o.event(zerolog.WarnLevel, name).Str("key", key).Msg(msg)
	}
}

// relay writes one of Gunicorn's lines. In JSON it is a gunicorn.log event with the original text
// in line (invalid UTF-8 is replaced there and the exact bytes are kept in line_b64), and the
// parsed pid and level where the line has them.
func (o *output) relay(s supervisor.Stream, line []byte, ev gunicorn.Event) {
	if o.text {
		buf := make([]byte, 0, len(line)+1)
		buf = append(append(buf, line...), '\n')
		_, _ = o.raw.Write(buf)
		return
	}
	e := o.log.WithLevel(gunicornLevel(ev.Level)).Str("event", "gunicorn.log").Str("stream", string(s)).
		Str("line", string(line))
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
		msg = string(line)
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
