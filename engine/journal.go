package engine

import (
	"syscall"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/internal/guard"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

// Journal is the flight record as the engine feeds it: each input the engine takes, on its
// goroutine and in the order it takes them, so that the record holds what the engine saw. What
// is kept is the journal's own choice (flightrec's one filter). Its calls must not block (a slow
// disk queues or drops) and should recover their own panics (gwrap's says it and turns the
// record off); the engine only keeps one from turning it off. The journal goes on after the
// engine panicked.
type Journal interface {
	// Gunicorn is one of Gunicorn's lines, as the engine parsed it (once).
	Gunicorn(gunicorn.Event)
	// Sweep is a sweep of the watcher: the cgroup's sample (nil: none) and the workers' events.
	Sweep(st *memwatch.Stats, evs []probes.Event)
	// Probe is one of the watcher's events outside a sweep.
	Probe(probes.Event)
	// Signal is a signal gwrap received, forwarded to Gunicorn or not.
	Signal(sig syscall.Signal, forwarded bool)
	// OOM is an OOM-kill notification of the container's cgroup.
	OOM(memwatch.OOMEvent)
}

// journal hands the journal an input, behind a guard of its own.
func (e *Engine) journal(in input) {
	j := e.cfg.Journal
	if j == nil || in.line != nil { // a line is journaled as it is relayed, parsed (marked.Relay)
		return
	}
	e.journalGuarded(func() {
		switch {
		case in.probe != nil:
			j.Probe(*in.probe)
		case in.sweep != nil:
			j.Sweep(in.sweep.stats, in.sweep.probes)
		case in.oom != nil:
			j.OOM(in.oom.ev)
		case in.signal != nil:
			j.Signal(in.signal.sig, in.signal.forwarded)
		}
	})
}

// journalGuarded runs f; a panic the journal did not recover itself stops there: the engine
// goes on.
func (e *Engine) journalGuarded(f func()) { _ = guard.Run("journal", f) }
