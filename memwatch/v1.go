package memwatch

import "path/filepath"

// Cgroup v1: the memory controller's files in its own hierarchy (memory.usage_in_bytes,
// memory.max_usage_in_bytes, memory.stat's total_* keys, memory.limit_in_bytes, memory.failcnt,
// memory.oom_control), the cpu controller's (cpu.cfs_quota_us, cpu.cfs_period_us, cpu.stat) and
// cpuacct.usage, each in the directory discover found for its controller.

// The keys read from v1's "key value" files, in the order of the Values they fill.
var (
	v1MemStatKeys  = []string{"total_rss", "total_cache", "total_shmem", "total_swap", "total_inactive_file", "hierarchical_memory_limit"}
	oomControlKeys = []string{"oom_kill"}
	v1CPUStatKeys  = []string{"nr_periods", "nr_throttled", "throttled_time"}
)

func (c *Cgroup) sampleV1(r *reader) {
	st, d := r.st, c.l.memDir
	st.Usage = r.uint(filepath.Join(d, "memory.usage_in_bytes"))
	st.Peak = r.uint(filepath.Join(d, "memory.max_usage_in_bytes"))
	var ms [6]Value
	r.kv(filepath.Join(d, "memory.stat"), v1MemStatKeys, ms[:])
	st.Anon, st.File, st.Shmem, st.Swap = ms[0], ms[1], ms[2], ms[3]
	if inactive := ms[4]; inactive.Known && st.Usage.Known {
		st.WorkingSet = Value{V: st.Usage.V - min(st.Usage.V, inactive.V), Known: true}
	}
	// The effective limit: the smallest on the way up, and memory.stat's hierarchical limit.
	st.Limit, st.LimitPath = c.walkLimit(r, "memory.limit_in_bytes", parseUint)
	if h := ms[5]; h.Known && h.V < unlimitedAbove && (!st.Limit.Known || h.V < st.Limit.V) {
		st.Limit, st.LimitPath = h, "hierarchical_memory_limit"
	}
	st.LimitHits = r.uint(filepath.Join(d, "memory.failcnt"))
	var oc [1]Value
	r.kv(filepath.Join(d, "memory.oom_control"), oomControlKeys, oc[:])
	st.OOMKill = oc[0]
	if c.l.cpuDir != "" {
		c.cpuV1(r)
	}
}

func (c *Cgroup) cpuV1(r *reader) {
	st := r.st
	// The quota: the smallest on the way up, in cores. -1 is no quota: parseUint fails on it,
	// and the period is not read.
	walkUp(c.l.cpuDir, c.l.cpuTop, func(dir string) {
		q, err := r.readRaw(filepath.Join(dir, "cpu.cfs_quota_us"))
		if err != nil {
			return
		}
		qi, err := parseUint(q)
		if err != nil || qi == 0 {
			return
		}
		if p, err := r.readRaw(filepath.Join(dir, "cpu.cfs_period_us")); err == nil {
			if pi, err := parseUint(p); err == nil && pi > 0 {
				st.CPUQuota.lower(float64(qi) / float64(pi))
			}
		}
	})
	var cs [3]Value
	r.kv(filepath.Join(c.l.cpuDir, "cpu.stat"), v1CPUStatKeys, cs[:])
	st.CPUPeriods, st.CPUThrottled = cs[0], cs[1]
	st.ThrottledTime = cs[2] // ns on v1
	if c.l.cpuacctDir != "" {
		st.CPUUsage = r.uint(filepath.Join(c.l.cpuacctDir, "cpuacct.usage"))
	}
}
