package memwatch

import (
	"bytes"
	"path/filepath"
)

// Cgroup v2: the unified hierarchy's files in the container's cgroup directory
// (memory.current, memory.peak, memory.stat, memory.swap.current, memory.max, memory.high,
// memory.events, memory.oom.group, cpu.max, cpu.stat).

// The keys read from v2's "key value" files, in the order of the Values they fill.
var (
	v2MemStatKeys = []string{"anon", "file", "shmem", "inactive_file"}
	v2EventsKeys  = []string{"max", "oom", "oom_kill"}
	v2CPUStatKeys = []string{"nr_periods", "nr_throttled", "throttled_usec", "usage_usec"}
)

func (c *Cgroup) sampleV2(r *reader) {
	st, d := r.st, c.l.memDir
	st.Usage = r.uint(filepath.Join(d, "memory.current"))
	st.Peak = r.uint(filepath.Join(d, "memory.peak")) // absent before 5.19: Known false, no warning
	var ms [4]Value
	r.kv(filepath.Join(d, "memory.stat"), v2MemStatKeys, ms[:])
	st.Anon, st.File, st.Shmem = ms[0], ms[1], ms[2]
	if inactive := ms[3]; inactive.Known && st.Usage.Known {
		st.WorkingSet = Value{V: st.Usage.V - min(st.Usage.V, inactive.V), Known: true}
	}
	st.Swap = r.uint(filepath.Join(d, "memory.swap.current"))
	st.Limit, st.LimitPath = c.walkLimit(r, "memory.max", parseMax)
	if h, ok := r.read(filepath.Join(d, "memory.high")); ok {
		if v, err := parseMax(h); err == nil && v < unlimitedAbove {
			st.High = Value{V: v, Known: true}
		}
	}
	var ev [3]Value
	r.kv(filepath.Join(d, "memory.events"), v2EventsKeys, ev[:])
	st.LimitHits, st.OOM, st.OOMKill = ev[0], ev[1], ev[2]
	st.OOMGroup = r.uint(filepath.Join(d, "memory.oom.group"))

	// The quota: the smallest on the way up.
	walkUp(c.l.cpuDir, c.l.cpuTop, func(dir string) {
		if b, err := r.readRaw(filepath.Join(dir, "cpu.max")); err == nil {
			if cores, ok := parseCPUMax(b); ok {
				st.CPUQuota.lower(cores)
			}
		}
	})
	var cs [4]Value
	r.kv(filepath.Join(c.l.cpuDir, "cpu.stat"), v2CPUStatKeys, cs[:])
	st.CPUPeriods, st.CPUThrottled = cs[0], cs[1]
	if us := cs[2]; us.Known {
		st.ThrottledTime = Value{V: us.V * 1000, Known: true} // µs on v2
	}
	if us := cs[3]; us.Known {
		st.CPUUsage = Value{V: us.V * 1000, Known: true}
	}
}

// parseCPUMax reads v2's cpu.max: "max 100000" (no quota) or "50000 100000" (0.5 cores).
func parseCPUMax(b []byte) (float64, bool) {
	q, p, ok := bytes.Cut(bytes.TrimSpace(b), []byte{' '})
	if !ok {
		return 0, false
	}
	qi, ok1 := decimal(q)
	pi, ok2 := decimal(bytes.TrimSpace(p))
	if !ok1 || !ok2 || qi == 0 || pi == 0 {
		return 0, false
	}
	return float64(qi) / float64(pi), true
}
