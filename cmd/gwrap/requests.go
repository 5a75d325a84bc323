package main

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/inflight"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// requests reads the requests each worker records through the stack hook (package inflight) for
// the engine's verdicts and late events. The files are the workers': each
// read is bounded, never follows a link and never blocks (inflight.ReadFile).
type requests struct {
	stk  *stacks
	mode inflight.QueryMode
	// mono is CLOCK_MONOTONIC now, the clock the hook stamps requests with (injectable).
	mono func() time.Duration
}

// newRequests returns the reader, or nil when requests are not recorded.
func newRequests(enabled bool, mode inflight.QueryMode, stk *stacks) *requests {
	if !enabled || stk == nil {
		return nil
	}
	return &requests{stk: stk, mode: mode, mono: monotonic}
}

// monotonic is CLOCK_MONOTONIC now.
func monotonic() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// table reads worker id's request file: its table and true, or why there is none.
func (q *requests) table(id probes.ID) (inflight.Table, string) {
	if q.stk.hook == nil {
		if q.stk.why != "" {
			return inflight.Table{}, "no request file: " + q.stk.why
		}
		return inflight.Table{}, "no request file: Python stacks are off"
	}
	t, err := inflight.ReadFile(q.stk.hook.RequestsFile(id.PID), q.mode)
	switch {
	case errors.Is(err, inflight.ErrNoFile):
		return inflight.Table{}, "the worker made no request file (it did not load gwrap's hook)"
	case err != nil:
		return inflight.Table{}, "its request file could not be read: " + err.Error()
	case !t.Belongs(id.PID, id.StartTime):
		return inflight.Table{}, "its request file is an earlier process's"
	case t.Status != inflight.Recording:
		return inflight.Table{}, "its requests are not recorded: " + t.Status.String()
	}
	return t, ""
}

// at is engine.Config.Requests: the requests worker id was serving at `at` (a death or a late
// event; a wall-clock time gwrap saw, mapped onto CLOCK_MONOTONIC), with their ages then. A
// request cut by Gunicorn's abort counts until it was cut.
func (q *requests) at(id probes.ID, at time.Time) (out []postmortem.Request, why string) {
	ok := q.stk.ps.run(partStacks, func() {
		t, w := q.table(id)
		if w != "" {
			why = w
			return
		}
		now := q.mono()
		then := now - time.Since(at)
		if then > now {
			then = now
		}
		for _, r := range t.InFlight {
			if r.Start <= then {
				out = append(out, request(r, then))
			}
		}
		for _, r := range t.Cut {
			// Cut at the death: the abort's SystemExit ended it then. One cut long before
			// belongs to no death of this process (a process is cut only as it ends).
			out = append(out, request(r, then))
		}
	})
	if !ok {
		return nil, "requests are off after an error in gwrap"
	}
	return out, why
}

func request(r inflight.Request, now time.Duration) postmortem.Request {
	return postmortem.Request{Method: r.Method, Path: r.Path, Query: r.Query, Remote: r.Remote,
		AgeSeconds: float64(r.Age(now).Round(100*time.Millisecond)) / float64(time.Second), Thread: r.ThreadID(), Cut: r.Cut}
}

// engineFunc is engine.Config.Requests: nil when requests are not recorded.
func (q *requests) engineFunc() func(probes.ID, time.Time) ([]postmortem.Request, string) {
	if q == nil {
		return nil
	}
	return q.at
}
