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

// Event is one of gwrap's own contract events (README.md, "Output"; the golden files in cmd/gwrap/testdata/contract): its name (worker.late,
// postmortem…), a one-sentence message, and the fields of that event. Time is when it happened,
// not when it is written.
type Event struct {
	Time    time.Time
	Level   Level
	Name    string
	Message string
	Fields  []Field
	// Fact is what the event says that is counted or reported besides stdout (metrics, the
	// termination message, the warn-once registry), typed: nil for an event that is only written.
	Fact Fact
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

// Fact is the typed payload of an event that the outputs count or report. Tell hands it to the
// one Port method that takes it, so that an output implementing Port takes every kind of fact:
// a fact the outputs do not take, or a renamed field, is a compile error, not a silent "unknown".
type Fact interface {
	Tell(Port, Event)
}

// Port is what the outputs besides stdout take from the engine's events, one typed method per
// kind of fact. output.Counts implements it for /metrics and the termination message.
type Port interface {
	// Verdict is a post-mortem's verdict (the postmortem event).
	Verdict(Event, Verdict)
	// OOMKill is the kernel's OOM kills in the container (oom.kill).
	OOMKill(Event, OOMKill)
	// Late is a worker silent for a share of its timeout (worker.late).
	Late(Event, Late)
	// Boot is a worker that booted (worker.boot).
	Boot(Event, Boot)
	// Recycled is a worker gwrap recycled (worker.recycled).
	Recycled(Event, Recycled)
	// GunicornVersion is the version Gunicorn's log names (gunicorn.start).
	GunicornVersion(Event, GunicornVersion)
	// DirtyTimeout is the dirty arbiter's timeout (dirty_arbiter.start).
	DirtyTimeout(Event, DirtyTimeout)
	// Warning is a degradation said once per Key (config.warning).
	Warning(Event, Warning)
}

// Verdict is a post-mortem's verdict: the cause, the worker and the one-sentence summary.
type Verdict struct {
	Cause   string
	PID     int
	Summary string
	// ExecTimeout: a dirty action timed out and no worker died.
	ExecTimeout bool
	Role        string // postmortem.Role*; "" for an HTTP worker
}

// OOMKill is how many OOM kills the kernel counted since the last one gwrap saw.
type OOMKill struct{ Count uint64 }

// Late is a worker silent for Share of its timeout.
type Late struct {
	Share float64
	Role  string // "" for an HTTP worker
}

// Boot is a worker that booted. Again: a stuck boot that finished, not a new worker.
type Boot struct {
	Role  string
	Again bool
}

// Recycled is a worker gwrap recycled, and why (recycle.Reason).
type Recycled struct{ Reason string }

// GunicornVersion is Gunicorn's version as its log says it.
type GunicornVersion struct{ Version string }

// DirtyTimeout is the dirty arbiter's --dirty-timeout.
type DirtyTimeout struct{ Timeout time.Duration }

// Warning is a config.warning: Code is what degraded (the event's code field), Key what is said
// once (a code may be said once per file or setting it names).
type Warning struct{ Key, Code string }

// Tell is Fact's.
func (v Verdict) Tell(p Port, e Event) { p.Verdict(e, v) }

// Tell is Fact's.
func (o OOMKill) Tell(p Port, e Event) { p.OOMKill(e, o) }

// Tell is Fact's.
func (l Late) Tell(p Port, e Event) { p.Late(e, l) }

// Tell is Fact's.
func (b Boot) Tell(p Port, e Event) { p.Boot(e, b) }

// Tell is Fact's.
func (r Recycled) Tell(p Port, e Event) { p.Recycled(e, r) }

// Tell is Fact's.
func (g GunicornVersion) Tell(p Port, e Event) { p.GunicornVersion(e, g) }

// Tell is Fact's.
func (d DirtyTimeout) Tell(p Port, e Event) { p.DirtyTimeout(e, d) }

// Tell is Fact's.
func (w Warning) Tell(p Port, e Event) { p.Warning(e, w) }

// Facts are a value of every kind of Fact, for the test that checks each reaches the outputs.
func Facts() []Fact {
	return []Fact{Verdict{}, OOMKill{}, Late{}, Boot{}, Recycled{}, GunicornVersion{}, DirtyTimeout{}, Warning{}}
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

// with sets the event's fact.
func (e Event) with(fact Fact) Event {
	e.Fact = fact
	return e
}

func f(key string, v any) Field { return Field{Key: key, Value: v} }
