package memwatch

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
)

func TestParseProcCgroup(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want map[string]string
	}{
		{"hybrid", "4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/\n", map[string]string{"memory": "/process_api/abc", "cpu": "/x", "cpuacct": "/x", "": "/"}},
		{"v2 only", "0::/kubepods.slice/a.scope\n", map[string]string{"": "/kubepods.slice/a.scope"}},
		{"named hierarchy and a colon in the path", "9:name=systemd:/a:b\n", map[string]string{"name=systemd": "/a:b"}},
		{"garbage", "nonsense\n\n", map[string]string{}},
	} {
		if got := parseProcCgroup([]byte(tc.in)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestParseMountinfo(t *testing.T) {
	in := `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
600 500 0:50 /docker/0123 /sys/fs/cgroup/cpu,cpuacct ro,nosuid master:20 - cgroup cgroup rw,cpu,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
42 31 0:39 /a\040b /mnt/x\040y rw - cgroup2 cgroup2 rw
truncated line
`
	want := []mount{
		{root: "/", point: "/sys/fs/cgroup/memory", fstype: "cgroup", opts: "rw,memory"},
		{root: "/docker/0123", point: "/sys/fs/cgroup/cpu,cpuacct", fstype: "cgroup", opts: "rw,cpu,cpuacct"},
		{root: "/", point: "/sys/fs/cgroup/unified", fstype: "cgroup2", opts: "rw"},
		{root: "/a b", point: "/mnt/x y", fstype: "cgroup2", opts: "rw"},
	}
	if got := parseMountinfo([]byte(in)); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if !want[1].hasController("cpuacct") || want[1].hasController("cpuset") {
		t.Error("hasController")
	}
}

func TestDirFor(t *testing.T) {
	for _, tc := range []struct {
		root, point, path, want string
	}{
		{"/", "/sys/fs/cgroup/memory", "/process_api/abc", "/sys/fs/cgroup/memory/process_api/abc"}, // host view
		{"/", "/sys/fs/cgroup", "/", "/sys/fs/cgroup"},                                              // cgroup namespace
		{"/docker/abc", "/sys/fs/cgroup/memory", "/docker/abc", "/sys/fs/cgroup/memory"},            // Docker v1 bind mount
		{"/docker/abc", "/sys/fs/cgroup/memory", "/docker/abc/sub", "/sys/fs/cgroup/memory/sub"},    // below it
		{"/docker/abc", "/sys/fs/cgroup/memory", "/elsewhere", "/sys/fs/cgroup/memory"},             // not visible: the mount
	} {
		if got := (mount{root: tc.root, point: tc.point}).dirFor(tc.path); got != tc.want {
			t.Errorf("root %s path %s: %s, want %s", tc.root, tc.path, got, tc.want)
		}
	}
}

func TestRebase(t *testing.T) {
	for _, tc := range []struct{ point, root, want string }{
		{"/sys/fs/cgroup/memory", "", "/sys/fs/cgroup/memory"},
		{"/sys/fs/cgroup/memory", "/tmp/t/sys", "/tmp/t/sys/memory"},
		{"/sys/fs/cgroup", "/tmp/t/sys", "/tmp/t/sys"},
		{"/sys/fs/cgroupx", "/tmp/t/sys", "/sys/fs/cgroupx"},
	} {
		if got := rebase(tc.point, tc.root); got != tc.want {
			t.Errorf("rebase(%s, %s) = %s, want %s", tc.point, tc.root, got, tc.want)
		}
	}
}

func TestParseValues(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		err  bool
	}{
		{"max\n", math.MaxUint64, false},
		{"9223372036854771712\n", 9223372036854771712, false},
		{"536870912", 536870912, false},
		{"", 0, true},
		{"-1", 0, true},
	} {
		got, err := parseMax([]byte(tc.in))
		if (err != nil) != tc.err || (!tc.err && got != tc.want) {
			t.Errorf("parseMax(%q) = %d, %v", tc.in, got, err)
		}
	}
	for _, tc := range []struct {
		in    string
		cores float64
		ok    bool
	}{
		{"max 100000\n", 0, false},
		{"25000 100000", 0.25, true},
		{"150000 100000\n", 1.5, true},
		{"0 100000", 0, false},
		{"50000", 0, false},
	} {
		if c, ok := parseCPUMax([]byte(tc.in)); ok != tc.ok || c != tc.cores {
			t.Errorf("parseCPUMax(%q) = %v, %v", tc.in, c, ok)
		}
	}
	kv := parseKV([]byte("total_rss 10\ntotal_cache 20\nbad line here\nhierarchical_memory_limit 9223372036854771712\nnegative -1\n"))
	if want := map[string]uint64{"total_rss": 10, "total_cache": 20, "hierarchical_memory_limit": 9223372036854771712}; !reflect.DeepEqual(kv, want) {
		t.Errorf("parseKV %v", kv)
	}
	for _, tc := range []struct {
		in         string
		some, full float64
	}{
		{"some avg10=1.25 avg60=0 avg300=0 total=1\nfull avg10=0.50 avg60=0 avg300=0 total=1\n", 1.25, 0.5},
		{"some avg10=3.00 avg60=1.00 avg300=0.50 total=100\n", 3, 0}, // host cpu: no full line on old kernels
		{"", 0, 0},
	} {
		if s, f := parsePSI([]byte(tc.in)); s != tc.some || f != tc.full {
			t.Errorf("parsePSI(%q) = %v %v", tc.in, s, f)
		}
	}
}

// TestV1UnlimitedEverywhere: v1's "no limit" (9223372036854771712) on the cgroup, its parents and
// in hierarchical_memory_limit is no limit, not a huge one; the start-up warning says so.
func TestV1UnlimitedEverywhere(t *testing.T) {
	root := copyTree(t, "v1-hybrid")
	dir := filepath.Join(root, "sys", "memory", "process_api", "abc")
	write(t, filepath.Join(dir, "memory.limit_in_bytes"), "9223372036854771712\n")
	write(t, filepath.Join(dir, "memory.stat"), "total_cache 1\ntotal_rss 2\ntotal_inactive_file 0\nhierarchical_memory_limit 9223372036854771712\n")
	st := openAt(t, root).Sample()
	if st.Limit.Known {
		t.Errorf("limit %+v from %s, want none", st.Limit, st.LimitPath)
	}
	if w := Warnings(st); len(w) != 1 {
		t.Errorf("warnings %v, want the no-limit one", w)
	}
}

// TestV1HierarchicalLimit: in Docker's layout the parents are not visible; memory.stat's
// hierarchical_memory_limit still gives the effective limit set above the container.
func TestV1HierarchicalLimit(t *testing.T) {
	root := copyTree(t, "v1-docker")
	dir := filepath.Join(root, "sys", "memory")
	write(t, filepath.Join(dir, "memory.limit_in_bytes"), "9223372036854771712\n")
	write(t, filepath.Join(dir, "memory.stat"), "total_cache 1\ntotal_rss 2\ntotal_inactive_file 0\nhierarchical_memory_limit 134217728\n")
	st := openAt(t, root).Sample()
	if !st.Limit.Known || st.Limit.V != 128<<20 {
		t.Errorf("limit %+v, want 128 MiB from hierarchical_memory_limit", st.Limit)
	}
}

// TestHybridPSIFromUnifiedMount: on a hybrid host whose cgroup has pressure files on the unified
// mount, PSI is the cgroup's own, not the host's.
func TestHybridPSIFromUnifiedMount(t *testing.T) {
	root := copyTree(t, "v1-hybrid")
	write(t, filepath.Join(root, "proc", "self", "cgroup"), "4:memory:/process_api/abc\n1:cpu:/process_api/abc\n2:cpuacct:/\n0::/process_api/abc\n")
	u := filepath.Join(root, "sys", "unified", "process_api", "abc")
	if err := os.MkdirAll(u, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(u, "memory.pressure"), "some avg10=7.50 avg60=0 avg300=0 total=1\nfull avg10=2.00 avg60=0 avg300=0 total=1\n")
	write(t, filepath.Join(u, "cpu.pressure"), "some avg10=9.00 avg60=0 avg300=0 total=1\n")
	c := openAt(t, root)
	if c.Version() != 1 {
		t.Fatalf("version %d: the memory controller is v1 here", c.Version())
	}
	st := c.Sample()
	if !st.PSI.Known || st.PSI.HostWide || st.PSI.MemorySome10 != 7.5 || st.PSI.MemoryFull10 != 2 || st.PSI.CPUSome10 != 9 {
		t.Errorf("psi %+v, want the cgroup's own", st.PSI)
	}
}

func openAt(t *testing.T, root string) *Cgroup {
	t.Helper()
	c, err := Open(Options{CgroupRoot: filepath.Join(root, "sys"), ProcRoot: filepath.Join(root, "proc")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDecimalAndFixedPoint(t *testing.T) {
	for _, tc := range []struct {
		in string
		v  uint64
		ok bool
	}{
		{"0", 0, true},
		{"18446744073709551615", math.MaxUint64, true},
		{"18446744073709551616", 0, false}, // overflow
		{"12a", 0, false},
		{"", 0, false},
		{"-1", 0, false},
	} {
		if v, ok := decimal([]byte(tc.in)); v != tc.v || ok != tc.ok {
			t.Errorf("decimal(%q) = %d, %v", tc.in, v, ok)
		}
	}
	for _, s := range []string{"0.00", "1.25", "12.25", "99.99", "100.00", "0.01", "7", "33.33"} {
		want, _ := strconv.ParseFloat(s, 64)
		if got, ok := fixedPoint([]byte(s)); !ok || got != want {
			t.Errorf("fixedPoint(%q) = %v, %v; strconv says %v", s, got, ok, want)
		}
	}
	for _, s := range []string{"", "1.2.3", "x", "1.x", "1.1234567"} {
		if _, ok := fixedPoint([]byte(s)); ok {
			t.Errorf("fixedPoint(%q) accepted", s)
		}
	}
	keys := []string{"a", "b", "c"}
	out := make([]Value, 3)
	scanKV([]byte("b 2\nab 9\na 1\nc x\n"), keys, out)
	if want := []Value{{1, true}, {2, true}, {0, false}}; !reflect.DeepEqual(out, want) {
		t.Errorf("scanKV %v, want %v", out, want)
	}
}

// TestSampleConcurrently: Sample reuses a buffer; two callers at once must not share it (-race).
func TestSampleConcurrently(t *testing.T) {
	c := open(t, "v2-namespace")
	want := c.Sample()
	done := make(chan Stats, 2)
	for range 2 {
		go func() {
			var st Stats
			for range 50 {
				st = c.Sample()
			}
			done <- st
		}()
	}
	for range 2 {
		if st := <-done; st.Usage != want.Usage || st.Limit != want.Limit || st.PSI != want.PSI || st.OOMKill != want.OOMKill {
			t.Errorf("concurrent sample %+v, want %+v", st, want)
		}
	}
}
