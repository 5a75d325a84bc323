package memwatch

import (
	"errors"
	"io/fs"
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
// needs, measured when memwatch was written; BenchmarkSample is gwrap's side). The library is
// used for the v1 OOM eventfd (oom_linux.go).
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

// walkUp calls f with dir and each directory above it up to top, the top of the hierarchy
// gwrap can see, nearest first: a memory limit or a CPU quota may be set on any of them (a
// Kubernetes pod's is on the container's parent), and the effective one is the smallest.
func walkUp(dir, top string, f func(dir string)) {
	for ; ; dir = filepath.Dir(dir) {
		f(dir)
		if dir == top || len(dir) <= len(top) {
			return
		}
	}
}

// walkLimit finds the smallest limit from the memory controller's directory up (walkUp), and
// the cgroup that sets it.
func (c *Cgroup) walkLimit(r *reader, file string, parse func([]byte) (uint64, error)) (Value, string) {
	best, where := Value{}, ""
	walkUp(c.l.memDir, c.l.memTop, func(dir string) {
		b, err := r.readRaw(filepath.Join(dir, file))
		if err == nil {
			if v, perr := parse(b); perr == nil && v < unlimitedAbove && (!best.Known || v < best.V) {
				best, where = Value{V: v, Known: true}, dir
			}
		} else if dir == c.l.memDir {
			r.read(filepath.Join(dir, file)) // record it as missing
		}
	})
	return best, where
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
