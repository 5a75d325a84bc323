// Package memwatch reads the container's cgroup (v1, v2 and hybrid layouts) through an
// injectable cgroup root and /proc root: memory usage, the effective limit, working set, OOM
// counters, CPU quota and throttling, pressure; and it turns OOM-kill notifications (eventfd on
// v1, inotify on v2) into events.
package memwatch

import "time"

// Value is a reading that may be absent: Known is false when the file was missing or unreadable,
// so that "could not read" is never reported as zero.
type Value struct {
	V     uint64 `json:"v"`
	Known bool   `json:"known"`
}

// Stats is one sample of the container's cgroup. Bytes for memory; for CPU, cores and
// nanoseconds whatever the cgroup version's own units.
type Stats struct {
	Time    time.Time `json:"t"`
	Version int       `json:"cgroup_version"` // 1 or 2

	Usage      Value  `json:"usage"`                // memory.current / memory.usage_in_bytes
	Limit      Value  `json:"limit"`                // effective limit: the nearest one on the way up; Known false = no limit
	LimitPath  string `json:"limit_path,omitempty"` // the cgroup that sets Limit
	WorkingSet Value  `json:"working_set"`          // usage − inactive file
	// Peak is the kernel's own record of the cgroup's highest usage since it was created (or
	// reset): memory.max_usage_in_bytes on v1, memory.peak on v2 (kernel ≥ 5.19). It catches a
	// spike between two samples, such as the allocation that met the limit.
	Peak      Value `json:"peak"`
	Anon      Value `json:"anon"`
	File      Value `json:"file"`
	Shmem     Value `json:"shmem"`
	Swap      Value `json:"swap"`
	High      Value `json:"high"`       // memory.high (v2)
	LimitHits Value `json:"limit_hits"` // failcnt (v1) / memory.events max (v2)
	OOM       Value `json:"oom"`        // memory.events oom (v2); under_oom is not a counter on v1
	OOMKill   Value `json:"oom_kill"`   // oom_kill counter
	OOMGroup  Value `json:"oom_group"`  // memory.oom.group (v2): 1 = one OOM kills the whole cgroup

	CPUQuotaCores float64 `json:"cpu_quota_cores"` // 0 = no quota
	CPUPeriods    Value   `json:"cpu_periods"`     // nr_periods
	CPUThrottled  Value   `json:"cpu_throttled"`   // nr_throttled
	ThrottledTime Value   `json:"throttled_ns"`    // throttled time, nanoseconds (v2 µs converted)
	CPUUsage      Value   `json:"cpu_usage_ns"`    // cgroup CPU time, nanoseconds

	PSI PSI `json:"psi"`

	Missing []string `json:"missing,omitempty"`
}

// PSI is pressure stall information: the share of time (percent) some or all tasks waited.
type PSI struct {
	MemorySome10 float64 `json:"memory_some_avg10"`
	MemoryFull10 float64 `json:"memory_full_avg10"`
	CPUSome10    float64 `json:"cpu_some_avg10"`
	Known        bool    `json:"known"`
	HostWide     bool    `json:"host_wide"` // read from /proc/pressure: the whole host, not the container
}

// NearLimit reports whether the working set is at least frac of the limit. It is false when
// either is unknown.
func (s Stats) NearLimit(frac float64) bool {
	if !s.Limit.Known || !s.WorkingSet.Known || s.Limit.V == 0 {
		return false
	}
	return float64(s.WorkingSet.V) >= frac*float64(s.Limit.V)
}

// OOMEvent is one move of the cgroup's oom_kill counter: Count is its increase, Total its new
// value. The move happened after After (a read that still showed the old value; zero when
// unknown) and by Time (the read that showed the new one): the victims were killed in between.
// Woke is when the notification that led to the reads came (zero: a poll found the move). The
// kernel notifies as the cgroup runs out of memory, just before it kills (v1's eventfd), or
// within its 20 ms rate limit of the move (v2's inotify on memory.events): the move is close to
// Woke, but may be a little before it, so it is no bound.
type OOMEvent struct {
	Time  time.Time `json:"t"`
	After time.Time `json:"after,omitzero"`
	Woke  time.Time `json:"woke,omitzero"`
	Count uint64    `json:"count"`
	Total uint64    `json:"total"`
}
