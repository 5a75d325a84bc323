package memwatch

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"strings"
	"sync"
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

	mu    sync.Mutex // Sample may be called from several goroutines; it reuses buf and files
	buf   []byte
	files map[string]int // open descriptors of the files Sample reads (readCached)
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
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Stats{Time: c.now(), Version: c.l.version}
	if c.files == nil {
		c.files = map[string]int{}
	}
	r := reader{st: &st, buf: c.buf, files: c.files}
	if c.l.version == 1 {
		c.sampleV1(&r)
	} else {
		c.sampleV2(&r)
	}
	c.samplePSI(&r)
	c.buf = r.buf
	return st
}

// reader reads files into Values, recording what is missing. The bytes a read returns are valid
// until the next read: parse them first.
type reader struct {
	st    *Stats
	buf   []byte
	files map[string]int
}

// readRaw reads a file into the reused buffer.
func (r *reader) readRaw(path string) ([]byte, error) {
	b, err := readCached(r.files, path, r.buf)
	if err == nil {
		r.buf = b[:0]
	}
	return b, err
}

// read is readRaw that names an unreadable file in Stats.Missing.
func (r *reader) read(path string) ([]byte, bool) {
	b, err := r.readRaw(path)
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

// kv reads "key value" lines into out, one Value per key (Known false for an absent key).
func (r *reader) kv(path string, keys []string, out []Value) {
	if b, ok := r.read(path); ok {
		scanKV(b, keys, out)
	}
}

// The keys read from each "key value" file, in the order of the Values they fill.
var (
	v1MemStatKeys  = []string{"total_rss", "total_cache", "total_shmem", "total_swap", "total_inactive_file", "hierarchical_memory_limit"}
	v2MemStatKeys  = []string{"anon", "file", "shmem", "inactive_file"}
	v2EventsKeys   = []string{"max", "oom", "oom_kill"}
	oomControlKeys = []string{"oom_kill"}
	v1CPUStatKeys  = []string{"nr_periods", "nr_throttled", "throttled_time"}
	v2CPUStatKeys  = []string{"nr_periods", "nr_throttled", "throttled_usec", "usage_usec"}
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
	// The quota: the smallest on the way up, in cores.
	for dir := c.l.cpuDir; ; dir = filepath.Dir(dir) {
		// -1 is no quota: parseUint fails on it, and the period is not read.
		if q, err := r.readRaw(filepath.Join(dir, "cpu.cfs_quota_us")); err == nil {
			if qi, err := parseUint(q); err == nil && qi > 0 {
				if p, err := r.readRaw(filepath.Join(dir, "cpu.cfs_period_us")); err == nil {
					if pi, err := parseUint(p); err == nil && pi > 0 {
						cores := float64(qi) / float64(pi)
						if st.CPUQuotaCores == 0 || cores < st.CPUQuotaCores {
							st.CPUQuotaCores = cores
						}
					}
				}
			}
		}
		if dir == c.l.cpuTop || len(dir) <= len(c.l.cpuTop) {
			break
		}
	}
	var cs [3]Value
	r.kv(filepath.Join(c.l.cpuDir, "cpu.stat"), v1CPUStatKeys, cs[:])
	st.CPUPeriods, st.CPUThrottled = cs[0], cs[1]
	st.ThrottledTime = cs[2] // ns on v1
	if c.l.cpuacctDir != "" {
		st.CPUUsage = r.uint(filepath.Join(c.l.cpuacctDir, "cpuacct.usage"))
	}
}

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

	for dir := c.l.cpuDir; ; dir = filepath.Dir(dir) {
		if b, err := r.readRaw(filepath.Join(dir, "cpu.max")); err == nil {
			if cores, ok := parseCPUMax(b); ok && (st.CPUQuotaCores == 0 || cores < st.CPUQuotaCores) {
				st.CPUQuotaCores = cores
			}
		}
		if dir == c.l.cpuTop || len(dir) <= len(c.l.cpuTop) {
			break
		}
	}
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

// walkLimit finds the smallest limit from the cgroup up to the top of the visible hierarchy
// (a Kubernetes pod-level limit sits on the parent).
func (c *Cgroup) walkLimit(r *reader, file string, parse func([]byte) (uint64, error)) (Value, string) {
	best, where := Value{}, ""
	for dir := c.l.memDir; ; dir = filepath.Dir(dir) {
		b, err := r.readRaw(filepath.Join(dir, file))
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
	var psi PSI
	mem, err1 := r.readRaw(filepath.Join(dir, pressureFile("memory", host)))
	if err1 == nil {
		psi.MemorySome10, psi.MemoryFull10 = parsePSI(mem)
	}
	cpu, err2 := r.readRaw(filepath.Join(dir, pressureFile("cpu", host)))
	if err2 == nil {
		psi.CPUSome10, _ = parsePSI(cpu)
	}
	if err1 != nil && err2 != nil {
		st.Missing = append(st.Missing, "pressure (PSI unavailable)")
		return
	}
	psi.Known, psi.HostWide = true, host
	st.PSI = psi
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
		out = append(out, "memory.oom.group is 1 (Kubernetes ≥ 1.28 on cgroup v2): the next OOM kill of any worker kills every process of the container, gwrap included, so no report can be written when it happens; gwrap keeps a flight record in the report dir (the last minutes of memory and worker samples) and the container's next start explains that death in a previous_run post-mortem, provided the report dir survives the restart (a volume, /home on App Service). Keep each worker's memory well under the limit (--max-requests), or run fewer workers")
	}
	if !st.Limit.Known {
		out = append(out, "no memory limit is set on the container's cgroup: workers can use the whole host's memory and OOM kills come from the host, not the container; set a memory limit so gwrap can say how near it workers are")
	}
	if bad := unreadable(st.Missing); len(bad) > 0 {
		out = append(out, "cannot read part of the container's cgroup ("+strings.Join(bad, ", ")+"): those values are reported as unknown, never as zero; check the cgroup mount and gwrap's permissions, or pass the cgroup path explicitly")
	}
	return out
}

// unreadable picks from Stats.Missing what is worth a start-up warning: files that exist but
// could not be read or parsed, and the usage files every kernel has. Other absent files are
// normal on some kernels (no swap accounting, no PSI) and stay silent.
func unreadable(missing []string) []string {
	var out []string
	for _, m := range missing {
		name, reason, _ := strings.Cut(m, " (")
		core := name == "memory.usage_in_bytes" || name == "memory.current" || name == "memory.stat"
		if reason != "missing)" || core {
			if name != "pressure" {
				out = append(out, m)
			}
		}
	}
	return out
}

// The parsers below work on the bytes as read, without converting them to strings: a sample runs
// every second and strconv's errors would make every conversion allocate.

// errNotNumber is parseUint's error: the content is not one unsigned decimal number.
var errNotNumber = errors.New("not an unsigned decimal number")

// parseUint reads one decimal number, surrounding white space allowed.
func parseUint(b []byte) (uint64, error) {
	v, ok := decimal(bytes.TrimSpace(b))
	if !ok {
		return 0, errNotNumber
	}
	return v, nil
}

// decimal parses digits only, refusing overflow.
func decimal(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// parseMax reads v2's "max" or a number; "max" is math.MaxUint64.
func parseMax(b []byte) (uint64, error) {
	if bytes.Equal(bytes.TrimSpace(b), []byte("max")) {
		return math.MaxUint64, nil
	}
	return parseUint(b)
}

// lines calls f with each line of b, without its newline.
func lines(b []byte, f func(line []byte)) {
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte{'\n'})
		f(line)
		b = rest
	}
}

// scanKV reads "key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control) into
// out: out[i] is the value of keys[i], Known false when the key is absent or not a number.
func scanKV(b []byte, keys []string, out []Value) {
	lines(b, func(line []byte) {
		k, v, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			return
		}
		for i, key := range keys {
			if string(k) == key {
				if n, ok := decimal(bytes.TrimSpace(v)); ok {
					out[i] = Value{V: n, Known: true}
				}
				return
			}
		}
	})
}

// parseKV reads every "key value" line with a number into a map.
func parseKV(b []byte) map[string]uint64 {
	m := map[string]uint64{}
	lines(b, func(line []byte) {
		k, v, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			return
		}
		if n, ok := decimal(bytes.TrimSpace(v)); ok {
			m[string(k)] = n
		}
	})
	return m
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

// parsePSI reads "some avg10=1.50 avg60=… total=…" and "full …" lines: the avg10 of each.
func parsePSI(b []byte) (some, full float64) {
	lines(b, func(line []byte) {
		kind, rest, _ := bytes.Cut(line, []byte{' '})
		avg, _, _ := bytes.Cut(rest, []byte{' '})
		num, ok := bytes.CutPrefix(avg, []byte("avg10="))
		if !ok {
			return
		}
		v, ok := fixedPoint(num)
		if !ok {
			return
		}
		switch string(kind) {
		case "some":
			some = v
		case "full":
			full = v
		}
	})
	return some, full
}

// fixedPoint parses "12.25" (the kernel prints PSI averages with two decimals): the digits as one
// integer divided once by a power of ten, which rounds as strconv.ParseFloat does.
func fixedPoint(b []byte) (float64, bool) {
	whole, frac, _ := bytes.Cut(b, []byte{'.'})
	if len(frac) > 6 {
		return 0, false
	}
	w, ok := decimal(whole)
	if !ok || w > 1<<32 {
		return 0, false
	}
	scale := uint64(1)
	for range frac {
		scale *= 10
	}
	f := uint64(0)
	if len(frac) > 0 {
		if f, ok = decimal(frac); !ok {
			return 0, false
		}
	}
	if len(frac) == 0 {
		return float64(w), true
	}
	return float64(w*scale+f) / float64(scale), true
}
