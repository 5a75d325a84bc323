package main

import (
	"fmt"
	"github.com/gwrap/gwrap/output"
	"sync/atomic"

	"github.com/gwrap/gwrap/internal/guard"
)

// PID 1 never falls. gwrap's monitoring parts run behind guards: a panic in one is recovered,
// said once (config.warning, code "panic", with the part, the panic's message and where it was
// raised), and the app runs on with that part off, or, for the report store, with the next job.
// Supervision (spawn, wait4, signal forwarding, the relay of lines to stdout) calls the parts
// through guards and never stops for them.

// part names one of gwrap's monitoring parts.
type part string

// The monitoring parts, and what becomes of each after a panic.
const (
	partEngine   part = "engine"   // the event loop: off, it only relays Gunicorn's lines
	partWatcher  part = "watcher"  // the worker watcher: off until a new master (USR2)
	partStore    part = "store"    // the report store: that report is lost, the next is tried
	partFlight   part = "flight"   // the flight record: off
	partStacks   part = "stacks"   // Python stacks: off
	partOOM      part = "oom"      // the OOM-kill watcher: off
	partNotify   part = "notify"   // memory notifications: off
	partCgroup   part = "cgroup"   // the cgroup sampler: off
	partMetrics  part = "metrics"  // /metrics: its live readings (or the server) off
	partSettings part = "settings" // reading a master's settings: they are not read again
	partTermlog  part = "termlog"  // the termination message: the stop's off, the exit's still tried
)

// afterPanic says what a panic leaves of each part (the warning's second half).
var afterPanic = map[part]string{
	partEngine:   "gwrap's post-mortems and worker events are off for the rest of this run; Gunicorn's lines are still relayed",
	partWatcher:  "workers are no longer sampled (post-mortems will lack their samples) until a new Gunicorn master starts",
	partStore:    "the post-mortem being written is lost (it is on stdout); the next ones will be written",
	partFlight:   "the flight record is off: a death of the whole container cannot be explained at the next start",
	partStacks:   "Python stacks are off",
	partOOM:      "OOM kills are no longer watched: a worker the kernel kills may be reported without the cause",
	partNotify:   "memory notifications are off: memory is sampled ten times a second only once a sample sees it climb",
	partCgroup:   "the container's cgroup is no longer sampled: post-mortems will lack its memory and CPU",
	partMetrics:  "/metrics goes on without the readings of that part",
	partSettings: "Gunicorn's settings are not read again",
	partTermlog:  "the termination message is not written when a stop begins; gwrap's exit still tries to write it",
}

// parts runs the monitoring parts behind guards and remembers which are off.
type parts struct {
	out *output.Writer
	off map[part]*atomic.Bool // one for each part of afterPanic, made once: read without a lock (the relay asks per line)
}

func newParts(out *output.Writer) *parts {
	ps := &parts{out: out, off: map[part]*atomic.Bool{}}
	for p := range afterPanic {
		ps.off[p] = &atomic.Bool{}
	}
	return ps
}

// run calls f unless the part is off, and reports whether f returned normally. A panic turns the
// part off and is said once.
func (ps *parts) run(p part, f func()) bool {
	if ps.isOff(p) {
		return false
	}
	if pn := guard.Run(string(p), f); pn != nil {
		ps.panicked(*pn, true)
		return false
	}
	return true
}

// try is run for a part that goes on after a panic (the report store: the next report is
// tried): the panic is said once, and the part stays on.
func (ps *parts) try(p part, f func()) bool {
	if pn := guard.Run(string(p), f); pn != nil {
		ps.panicked(*pn, false)
		return false
	}
	return true
}

// isOff reports whether the part panicked and was turned off.
func (ps *parts) isOff(p part) bool { return ps.off[p].Load() }

// panicked says a part's panic, once per part, and turns the part off when off.
func (ps *parts) panicked(pn guard.Panic, off bool) {
	p := part(pn.Part)
	if off {
		ps.off[p].Store(true)
	}
	ps.out.Panicked(pn.Part, pn.Message, pn.Where, fmt.Sprintf("gwrap's %s panicked (%s, at %s): %s; Gunicorn is still supervised", pn.Part, pn.Message, pn.Where, afterPanic[p]))
}
