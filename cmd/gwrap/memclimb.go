package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/gwrap/gwrap/forecast"
	"github.com/gwrap/gwrap/memwatch"
)

// memClimb tells the worker watcher when memory climbs, so that it sweeps (the cgroup and every
// worker) at --fast-interval instead of once per --interval: while the working set is at 80 % of
// the limit or more, climbs by 2 % of the limit within about a second, or for 2 s after
// memwatch.Notify said memory moved (a v1 threshold crossed, v2's memory.events, a memory.pressure
// trigger). A notification also makes the watcher sweep at once. A fill from half the limit to
// the limit within half a second then leaves samples of its climb, where the 1 Hz sweep alone
// could leave none.
type memClimb struct {
	fc       *forecast.Tracker                 // the watcher's goroutine only (sample, fast)
	woke     atomic.Int64                      // the last notification, Unix ns (0: none)
	notifier atomic.Pointer[memwatch.Notifier] // Notify's, once registered
	wake     func()                            // asks the watcher for a sweep now (never blocks)
}

func newMemClimb() *memClimb { return &memClimb{fc: forecast.New(forecast.Options{})} }

// sample takes the sweep's cgroup sample (the watcher's goroutine).
func (m *memClimb) sample(st memwatch.Stats) {
	if !st.WorkingSet.Known || !st.Limit.Known || st.Limit.V == 0 {
		return
	}
	m.fc.Add(st.Time, st.WorkingSet.V, st.Limit.V)
	if st.Usage.Known {
		m.notifier.Load().Observe(st.Usage.V) // nil-safe: a Notify not registered (yet)
	}
}

// fast reports whether the watcher should sweep at --fast-interval (the watcher's goroutine).
func (m *memClimb) fast(now time.Time) bool {
	if m.fc.Fast(now) {
		return true
	}
	w := m.woke.Load()
	return w != 0 && now.Sub(time.Unix(0, w)) < notifyHold
}

// notifyHold is how long a notification keeps the sweep fast (forecast's FastHold).
const notifyHold = 2 * time.Second

// pressureTrigger is the memory.pressure trigger: 50 ms of some tasks stalled on memory within a
// second, the start of reclaim that slows the app, well before an OOM kill.
const pressureTrigger = "some 50000 1000000"

// run wakes the watcher when the container's memory moves, until ctx is done (Notify's
// goroutine). limit is the container's memory limit (0: none, nothing to approach).
func (m *memClimb) run(ctx context.Context, cg *memwatch.Cgroup, limit uint64, warn func(string)) {
	cg.Notify(ctx, limit, memwatch.NotifyOptions{Pressure: pressureTrigger}, func(w memwatch.Wake) {
		m.woke.Store(w.Time.UnixNano())
		m.wake()
	}, warn, func(n *memwatch.Notifier) { m.notifier.Store(n) })
}
