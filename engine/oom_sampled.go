package engine

import (
	"time"

	"github.com/gwrap/gwrap/memwatch"
)

// The sweep reads the cgroup's oom_kill counter too (memwatch.Stats.OOMKill). The OOM watcher's
// notification normally reports a move within milliseconds, but it can come late or not at all:
// after a wake-up memwatch re-reads the counter for two seconds only, then polls it every 10 s,
// and on a slow host (seen under emulation in the v2 guest) the move came after that window. A
// SIGKILLed worker decided before the event arrived was reported "crashed" although the counter
// had moved. So a move the sweep sees and no event has reported holds the deaths open
// (state.waiting) for oomEventWait, and is then taken as the OOM event itself, placed between the
// two samples around it: its victims are named from their own evidence as for any move
// (nameVictims). An event that comes later for a move already taken is not counted twice.

// oomEventWait is how long a move the sweep saw waits for the OOM watcher's event before the
// sweep's own reading stands for it.
const oomEventWait = 2 * time.Second

// sampledOOM is a move of the counter the sweep saw before any event reported it.
type sampledOOM struct {
	after time.Time // the sample before it, which showed the counter unmoved
	at    time.Time // the sample that showed it moved
	total uint64    // the counter then
}

// oomCounter keeps the counter's accounting: the highest value an event or a taken sampled move
// reported, and a move the sweep saw ahead of it.
type oomCounter struct {
	total memwatch.Value // the counter as accounted (unknown until the first sample or event)
	last  time.Time      // the last sample that read the counter
	ahead *sampledOOM
}

// sampled takes a sweep's reading of the counter.
func (c *oomCounter) sampled(st memwatch.Stats) {
	v := st.OOMKill
	if !v.Known {
		return
	}
	after := c.last
	c.last = st.Time
	switch {
	case !c.total.Known || v.V < c.total.V: // the first reading, or the cgroup was recreated
		c.total, c.ahead = v, nil
	case v.V > c.total.V && c.ahead == nil && !after.IsZero():
		c.ahead = &sampledOOM{after: after, at: st.Time, total: v.V}
	case c.ahead != nil && v.V > c.ahead.total:
		c.ahead.total = v.V
	}
}

// reported takes an event's new total; it returns false when the move was already taken from the
// sweep (the event came too late to count).
func (c *oomCounter) reported(e memwatch.OOMEvent) bool {
	total := e.Total
	if total == 0 { // an event that does not say the total: the count moves the accounting
		total = c.total.V + e.Count
	}
	if c.total.Known && total <= c.total.V {
		return false
	}
	c.total = memwatch.Value{V: total, Known: true}
	if c.ahead != nil && total >= c.ahead.total {
		c.ahead = nil
	}
	return true
}

// due returns the sampled move whose wait is over at now, as an OOM event, and forgets it.
func (c *oomCounter) due(now time.Time) (memwatch.OOMEvent, bool) {
	a := c.ahead
	if a == nil || now.Before(a.at.Add(oomEventWait)) {
		return memwatch.OOMEvent{}, false
	}
	c.ahead = nil
	return memwatch.OOMEvent{Time: a.at, After: a.after, Count: a.total - c.total.V, Total: a.total}, true
}

// pending reports whether a move the sweep saw still waits for its event.
func (c *oomCounter) pending() bool { return c.ahead != nil }
