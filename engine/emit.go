package engine

import (
	"time"

	"github.com/gwrap/gwrap/gunicorn"
)

// Level is an event's severity.
type Level int8

// The levels gwrap's events use.
const (
	Info Level = iota
	Warn
	Error
)

// Field is one key and value of an event, in the order they are written. Values are strings,
// bools, ints, uint64s, float64s, []string or []int.
type Field struct {
	Key   string
	Value any
}

// Event is one of gwrap's own contract events (DESIGN.md, "Contract"): its name (worker.late,
// postmortem…), a one-sentence message, and the fields of that event. Time is when it happened,
// not when it is written.
type Event struct {
	Time    time.Time
	Level   Level
	Name    string
	Message string
	Fields  []Field
}

// Get returns a field's value (for tests and adapters).
func (e Event) Get(key string) (any, bool) {
	for _, f := range e.Fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return nil, false
}

// Emitter writes what the engine says: Gunicorn's lines relayed as they came (with what the
// parser made of them) and gwrap's own events. It must not block for long: stdout can stall.
type Emitter interface {
	Relay(stream string, line []byte, parsed gunicorn.Event, at time.Time)
	Emit(Event)
}

// ev starts an event.
func ev(at time.Time, level Level, name, msg string, fields ...Field) Event {
	return Event{Time: at, Level: level, Name: name, Message: msg, Fields: fields}
}

func f(key string, v any) Field { return Field{Key: key, Value: v} }
