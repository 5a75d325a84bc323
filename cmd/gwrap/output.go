package main

import (
	"encoding/base64"
	"fmt"
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
// for concurrent use and never blocks its caller on stdout: every line is formatted (and
// timestamped) by the caller, when it happens, and handed to a lineQueue whose one writer
// goroutine writes them in order. Lines that cannot be written are counted (lost), said once on
// stderr, and reported in gwrap.exit.
type output struct {
	text bool
	q    *lineQueue
	log  zerolog.Logger

	onceMu sync.Mutex
	once   map[string]bool
}

// maxMessage bounds the message of a relayed line the parser left without one (an access line):
// the whole line is in "line".
const maxMessage = 64 << 10

// newOutput writes to w; stderr gets the one-line notices when stdout fails.
func newOutput(w, stderr io.Writer, format string, now func() time.Time) *output {
	zerolog.TimeFieldFormat = time.RFC3339Nano
	zerolog.TimestampFunc = func() time.Time { return now().UTC() }
	q := newLineQueue(w, func(msg string) { go fmt.Fprintln(stderr, msg) })
	o := &output{text: format == "text", q: q, once: map[string]bool{}}
	var sink io.Writer = q
	if o.text {
		sink = zerolog.ConsoleWriter{Out: q, NoColor: true, TimeFormat: time.RFC3339,
			FieldsExclude: []string{"line"}, PartsOrder: []string{"time", "level", "event", "message"}}
	}
	o.log = zerolog.New(sink).With().Timestamp().Logger()
	return o
}

// lost is how many lines did not reach stdout so far: dropped because the reader fell behind,
// and failed (EPIPE, ENOSPC).
func (o *output) lost() uint64 {
	d, f := o.q.lost()
	return d + f
}

// finish emits the last lines (last, normally gwrap.exit), which are queued whatever the bounds,
// waits at most d for stdout to take everything, and returns how many lines were lost in all.
// When some were, it says so on stderr (waiting at most d for stderr as well).
func (o *output) finish(last func(), d time.Duration, stderr io.Writer) uint64 {
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
// warnCode says a config.warning with its code once per key.
func (o *output) warnCode(key, code, msg string) {
	o.onceMu.Lock()
	seen := o.once[key]
	o.once[key] = true
	o.onceMu.Unlock()
	if !seen {
		o.event(zerolog.WarnLevel, "config.warning").Str("code", code).Msg(msg)
	}
}

func (o *output) relay(s supervisor.Stream, line []byte, ev gunicorn.Event) {
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
