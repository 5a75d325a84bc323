package memwatch

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Cgroup is the container's cgroup, found once by Open and read by Sample.
//
// Files are read directly rather than through containerd/cgroups/v3's Stat: its v2 readers return
// 0 for a missing file (a zero that means "could not read"), its v1 path helpers fail under
// Docker's bind-mounted layout, and its v1 Stat opens ~18 files (8× the cost of the few gwrap
// needs, LIBRARIES.md §2.9). The library is used for the v1 OOM eventfd (oom_linux.go).
type Cgroup struct {
	l    layout
	proc string
	now  func() time.Time
	// watching, when set (tests), is called once WatchOOM has read the starting counter and set
	// up its notification: a change after that is an OOM kill it must report.
	watching func()
}

// Open finds the cgroup of opt.PID (default: the caller).
func Open(opt Options) (*Cgroup, error) {
	l, err := discover(opt)
	if err != nil {
		return nil, err
	}
	proc := opt.ProcRoot
	if proc == "" {
		proc = "/proc"
	}
	return &Cgroup{l: l, proc: proc, now: time.Now}, nil
}

// Version is 1 or 2.
func (c *Cgroup) Version() int { return c.l.version }

// Path is the cgroup path, as /proc/self/cgroup shows it.
func (c *Cgroup) Path() string { return c.l.path }

// Dir is the directory of the memory controller's files.
func (c *Cgroup) Dir() string { return c.l.memDir }

// Describe says in one line what was found.
func (c *Cgroup) Describe() string {
	return fmt.Sprintf("cgroup v%d %s (memory files in %s)", c.l.version, c.l.path, c.l.memDir)
}

// unlimited is what v1 reports for "no limit" (page-aligned LONG_MAX); anything above 2^62 is
// treated as no limit.
const unlimitedAbove = 1 << 62

// Sample reads the cgroup. It never fails: files it cannot read are named in Stats.Missing.
func (c *Cgroup) Sample() Stats {
	st := Stats{Time: c.now(), Version: c.l.version}
	r := reader{st: &st}
	if c.l.version == 1 {
		c.sampleV1(&r)
	} else {
		c.sampleV2(&r)
	}
	c.samplePSI(&r)
	return st
}

// reader reads files into Values, recording what is missing.
type reader struct{ st *Stats }

func (r *reader) read(path string) ([]byte, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		reason := "unreadable"
		if errors.Is(err, fs.ErrNotExist) {
			reason = "missing"
		} else if errors.Is(err, fs.ErrPermission) {
			reason = "permission denied"
		}
		r.st.Missing = append(r.st.Missing, filepath.Base(path)+" ("+reason+")")
		return nil, false
	}
	return b, true
}

func (r *reader) uint(path string) Value {
	b, ok := r.read(path)
	if !ok {
		return Value{}
	}
	v, err := parseUint(b)
	if err != nil {
		r.st.Missing = append(r.st.Missing, filepath.Base(path)+" (unparsable)")
		return Value{}
	}
	return Value{V: v, Known: true}
}

func (r *reader) kv(path string) map[string]uint64 {
	b, ok := r.read(path)
	if !ok {
		return nil
	}
	return parseKV(b)
}

func known(m map[string]uint64, k string) Value {
	v, ok := m[k]
	return Value{V: v, Known: ok}
}

func (c *Cgroup) sampleV1(r *reader) {
	st, d := r.st, c.l.memDir
	st.Usage = r.uint(filepath.Join(d, "memory.usage_in_bytes"))
	ms := r.kv(filepath.Join(d, "memory.stat"))
	st.Anon, st.File = known(ms, "total_rss"), known(ms, "total_cache")
	st.Shmem, st.Swap = known(ms, "total_shmem"), known(ms, "total_swap")
	if inactive, ok := ms["total_inactive_file"]; ok && st.Usage.Known {
		st.WorkingSet = Value{V: st.Usage.V - min(st.Usage.V, inactive), Known: true}
	}
	// The effective limit: the smallest on the way up, and memory.stat's hierarchical limit.
	st.Limit, st.LimitPath = c.walkLimit(r, "memory.limit_in_bytes", parseUint)
	if h, ok := ms["hierarchical_memory_limit"]; ok && h < unlimitedAbove && (!st.Limit.Known || h < st.Limit.V) {
		st.Limit, st.LimitPath = Value{V: h, Known: true}, "hierarchical_memory_limit"
	}
	st.LimitHits = r.uint(filepath.Join(d, "memory.failcnt"))
	oc := r.kv(filepath.Join(d, "memory.oom_control"))
	st.OOMKill = known(oc, "oom_kill")
	if c.l.cpuDir != "" {
		c.cpuV1(r)
	}
}

func (c *Cgroup) cpuV1(r *reader) {
	st := r.st
	// The quota: the smallest on the way up, in cores.
	for dir := c.l.cpuDir; ; dir = filepath.Dir(dir) {
		q, err1 := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
		p, err2 := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
		if err1 == nil && err2 == nil {
			qi, e1 := strconv.ParseInt(strings.TrimSpace(string(q)), 10, 64)
			pi, e2 := strconv.ParseInt(strings.TrimSpace(string(p)), 10, 64)
			if e1 == nil && e2 == nil && qi > 0 && pi > 0 {
				cores := float64(qi) / float64(pi)
				if st.CPUQuotaCores == 0 || cores < st.CPUQuotaCores {
					st.CPUQuotaCores = cores
				}
			}
		}
		if dir == c.l.cpuTop || len(dir) <= len(c.l.cpuTop) {
			break
		}
	}
	cs := r.kv(filepath.Join(c.l.cpuDir, "cpu.stat"))
	st.CPUPeriods, st.CPUThrottled = known(cs, "nr_periods"), known(cs, "nr_throttled")
	st.ThrottledTime = known(cs, "throttled_time") // ns on v1
	if c.l.cpuacctDir != "" {
		st.CPUUsage = r.uint(filepath.Join(c.l.cpuacctDir, "cpuacct.usage"))
	}
}

func (c *Cgroup) sampleV2(r *reader) {
	st, d := r.st, c.l.memDir
	st.Usage = r.uint(filepath.Join(d, "memory.current"))
	ms := r.kv(filepath.Join(d, "memory.stat"))
	st.Anon, st.File, st.Shmem = known(ms, "anon"), known(ms, "file"), known(ms, "shmem")
	if inactive, ok := ms["inactive_file"]; ok && st.Usage.Known {
		st.WorkingSet = Value{V: st.Usage.V - min(st.Usage.V, inactive), Known: true}
	}
	st.Swap = r.uint(filepath.Join(d, "memory.swap.current"))
	st.Limit, st.LimitPath = c.walkLimit(r, "memory.max", parseMax)
	if h, ok := r.read(filepath.Join(d, "memory.high")); ok {
		if v, err := parseMax(h); err == nil && v < unlimitedAbove {
			st.High = Value{V: v, Known: true}
		}
	}
	ev := r.kv(filepath.Join(d, "memory.events"))
	st.LimitHits, st.OOM, st.OOMKill = known(ev, "max"), known(ev, "oom"), known(ev, "oom_kill")
	st.OOMGroup = r.uint(filepath.Join(d, "memory.oom.group"))

	for dir := c.l.cpuDir; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "cpu.max")); err == nil {
			if cores, ok := parseCPUMax(b); ok && (st.CPUQuotaCores == 0 || cores < st.CPUQuotaCores) {
				st.CPUQuotaCores = cores
			}
		}
		if dir == c.l.cpuTop || len(dir) <= len(c.l.cpuTop) {
			break
		}
	}
	cs := r.kv(filepath.Join(c.l.cpuDir, "cpu.stat"))
	st.CPUPeriods, st.CPUThrottled = known(cs, "nr_periods"), known(cs, "nr_throttled")
	if us, ok := cs["throttled_usec"]; ok {
		st.ThrottledTime = Value{V: us * 1000, Known: true} // µs on v2
	}
	if us, ok := cs["usage_usec"]; ok {
		st.CPUUsage = Value{V: us * 1000, Known: true}
	}
}

// walkLimit finds the smallest limit from the cgroup up to the top of the visible hierarchy
// (a Kubernetes pod-level limit sits on the parent).
func (c *Cgroup) walkLimit(r *reader, file string, parse func([]byte) (uint64, error)) (Value, string) {
	best, where := Value{}, ""
	for dir := c.l.memDir; ; dir = filepath.Dir(dir) {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err == nil {
			if v, perr := parse(b); perr == nil && v < unlimitedAbove && (!best.Known || v < best.V) {
				best, where = Value{V: v, Known: true}, dir
			}
		} else if dir == c.l.memDir {
			r.read(filepath.Join(dir, file)) // record it as missing
		}
		if dir == c.l.memTop || len(dir) <= len(c.l.memTop) {
			break
		}
	}
	return best, where
}

func (c *Cgroup) samplePSI(r *reader) {
	st := r.st
	dir, host := c.l.psiDir, false
	if dir == "" {
		dir, host = filepath.Join(c.proc, "pressure"), true
	}
	mem, err1 := os.ReadFile(filepath.Join(dir, pressureFile("memory", host)))
	cpu, err2 := os.ReadFile(filepath.Join(dir, pressureFile("cpu", host)))
	if err1 != nil && err2 != nil {
		st.Missing = append(st.Missing, "pressure (PSI unavailable)")
		return
	}
	st.PSI.Known, st.PSI.HostWide = true, host
	if err1 == nil {
		st.PSI.MemorySome10, st.PSI.MemoryFull10 = parsePSI(mem)
	}
	if err2 == nil {
		st.PSI.CPUSome10, _ = parsePSI(cpu)
	}
}

func pressureFile(res string, host bool) string {
	if host {
		return res
	}
	return res + ".pressure"
}

// Warnings are the start-up findings about the cgroup, from a sample of it.
func Warnings(st Stats) []string {
	var out []string
	if st.OOMGroup.Known && st.OOMGroup.V == 1 {
		out = append(out, "memory.oom.group is 1 (Kubernetes ≥ 1.28 on cgroup v2): one worker's OOM kills the whole container, gwrap included; reports are written to disk as incidents develop, but the last seconds may be lost. Keep each worker's memory well under the limit (--max-requests), or run fewer workers")
	}
	if !st.Limit.Known {
		out = append(out, "no memory limit is set on the container's cgroup: workers can use the whole host's memory and OOM kills come from the host, not the container; set a memory limit so gwrap can say how near it workers are")
	}
	return out
}

// parseUint reads one decimal number.
func parseUint(b []byte) (uint64, error) {
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// parseMax reads v2's "max" or a number; "max" is math.MaxUint64.
func parseMax(b []byte) (uint64, error) {
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return math.MaxUint64, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// parseKV reads "key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control).
func parseKV(b []byte) map[string]uint64 {
	m := map[string]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			m[k] = n
		}
	}
	return m
}

// parseCPUMax reads v2's cpu.max: "max 100000" (no quota) or "50000 100000" (0.5 cores).
func parseCPUMax(b []byte) (float64, bool) {
	f := strings.Fields(string(b))
	if len(f) != 2 || f[0] == "max" {
		return 0, false
	}
	q, err1 := strconv.ParseFloat(f[0], 64)
	p, err2 := strconv.ParseFloat(f[1], 64)
	if err1 != nil || err2 != nil || p <= 0 || q <= 0 {
		return 0, false
	}
	return q / p, true
}

// parsePSI reads "some avg10=1.50 avg60=… total=…" and "full …" lines: the avg10 of each.
func parsePSI(b []byte) (some, full float64) {
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasPrefix(f[1], "avg10=") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimPrefix(f[1], "avg10="), 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "some":
			some = v
		case "full":
			full = v
		}
	}
	return some, full
}
