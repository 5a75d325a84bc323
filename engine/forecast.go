package engine

import (
	"fmt"
	"math"
	"time"

	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
)

// forecastSample feeds the forecast a cgroup sample and says memory.forecast, once per episode of
// growth, when at the current growth the container reaches its limit within the horizon (10
// minutes).
func (s *state) forecastSample(st memwatch.Stats) {
	if !st.WorkingSet.Known || !st.Limit.Known || st.Limit.V == 0 {
		return
	}
	s.fc.Add(st.Time, st.WorkingSet.V, st.Limit.V)
	g, ok := s.fc.Warn()
	if !ok {
		return
	}
	s.emit(ev(st.Time, Warn, "memory.forecast", fmt.Sprintf(
		"the container's working set grows by %.1f MiB/s since %s (%d MiB then, %d MiB now): at this pace it reaches its %d MiB limit in about %s",
		g.Rate/(1<<20), g.Since.UTC().Format(time.RFC3339), g.From>>20, g.Now>>20, g.Limit>>20, g.ToLimit.Round(time.Second)),
		f("growth_bytes_per_second", float64(int64(g.Rate))), f("since", g.Since.UTC().Format(time.RFC3339Nano)), f("from_bytes", g.From),
		f("working_set_bytes", g.Now), f("limit_bytes", g.Limit), f("seconds_to_limit", round1(g.ToLimit.Seconds()))))
}

// memoryGrowth is, for an incident at at, how fast the container's working set grew up to it and
// since when: the forecast's episode of growth, fitted up to at (for a climb too short to fit,
// its mean). nil when memory did not grow.
func (s *state) memoryGrowth(at time.Time) *postmortem.MemoryGrowth {
	g, ok := s.fc.GrowthAt(at)
	if !ok || g.Now <= g.From {
		return nil
	}
	rate := g.Rate
	if !g.Known {
		rate = g.Mean()
	}
	if rate < 1 {
		return nil
	}
	return &postmortem.MemoryGrowth{BytesPerSecond: math.Round(rate), Fitted: g.Known, Since: g.Since.UTC(),
		FromBytes: g.From, WorkingSetBytes: g.Now, At: g.At.UTC()}
}
