package memwatch

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func open(t *testing.T, tree string) *Cgroup {
	t.Helper()
	root := filepath.Join("testdata", tree)
	c, err := Open(Options{CgroupRoot: filepath.Join(root, "sys"), ProcRoot: filepath.Join(root, "proc")})
	if err != nil {
		t.Fatalf("%s: %v", tree, err)
	}
	return c
}

func TestFixtureTrees(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		tree             string
		version          int
		usage, limit, ws uint64
		limitKnown       bool
		oomKill          uint64
		quota            Cores
		throttledNS      uint64
		psiHost          bool
		psiMem           float64
		peak             Value // the kernel's recorded peak; v2 before 5.19 has none
	}{
		{"v1-hybrid", 1, 498331648, 512 * mib, 498331648 - 221376512, true, 2, Cores{0.5, true}, 2500000000, true, 1.5, Value{536866816, true}},
		{"v1-docker", 1, 100 * mib, 256 * mib, 100*mib - 5*mib, true, 0, Cores{2, true}, 0, true, 0, Value{250 * mib, true}},
		{"v2-namespace", 2, 900 * mib, 1024 * mib, 900*mib - 40*mib, true, 3, Cores{1.5, true}, 4500000000, false, 22, Value{1024 * mib, true}},
		{"v2-k8s-pod", 2, 200 * mib, 512 * mib, 200*mib - 8*mib, true, 0, Cores{1, true}, 0, true, 0, Value{}},
		{"v2-unlimited-missing", 2, 1 * mib, 0, 0, false, 0, Cores{}, 0, false, 0, Value{}}, // no quota: absent, not 0
	} {
		t.Run(tc.tree, func(t *testing.T) {
			c := open(t, tc.tree)
			st := c.Sample()
			if c.Version() != tc.version || st.Version != tc.version {
				t.Errorf("version %d", c.Version())
			}
			if !st.Usage.Known || st.Usage.V != tc.usage {
				t.Errorf("usage %+v, want %d", st.Usage, tc.usage)
			}
			if st.Limit.Known != tc.limitKnown || st.Limit.V != tc.limit {
				t.Errorf("limit %+v (%s), want %d known=%v", st.Limit, st.LimitPath, tc.limit, tc.limitKnown)
			}
			if tc.ws != 0 && (!st.WorkingSet.Known || st.WorkingSet.V != tc.ws) {
				t.Errorf("working set %+v, want %d", st.WorkingSet, tc.ws)
			}
			if tc.tree != "v2-unlimited-missing" && (!st.OOMKill.Known || st.OOMKill.V != tc.oomKill) {
				t.Errorf("oom_kill %+v, want %d", st.OOMKill, tc.oomKill)
			}
			if st.CPUQuota != tc.quota {
				t.Errorf("quota %+v, want %+v", st.CPUQuota, tc.quota)
			}
			if st.ThrottledTime.V != tc.throttledNS {
				t.Errorf("throttled %+v ns, want %d", st.ThrottledTime, tc.throttledNS)
			}
			if st.Peak != tc.peak {
				t.Errorf("peak %+v, want %+v", st.Peak, tc.peak)
			}
			if !tc.peak.Known && strings.Contains(strings.Join(Warnings(st), " "), "peak") {
				t.Errorf("a kernel without memory.peak is warned about: %v", Warnings(st))
			}
			if st.PSI.Known && (st.PSI.HostWide != tc.psiHost || st.PSI.MemorySome10 != tc.psiMem) {
				t.Errorf("psi %+v", st.PSI)
			}
		})
	}
}

// TestMissingIsNotZero: files that are not there are Missing and Known=false, never zero.
func TestMissingIsNotZero(t *testing.T) {
	st := open(t, "v2-unlimited-missing").Sample()
	if st.OOMKill.Known || st.WorkingSet.Known || st.Anon.Known {
		t.Errorf("missing files read as known: %+v", st)
	}
	joined := strings.Join(st.Missing, ",")
	for _, f := range []string{"memory.stat", "memory.events", "pressure"} {
		if !strings.Contains(joined, f) {
			t.Errorf("%s not reported missing: %v", f, st.Missing)
		}
	}
}

func TestDockerLayoutResolvesToTheMount(t *testing.T) {
	c := open(t, "v1-docker")
	if !strings.HasSuffix(c.Dir(), filepath.Join("v1-docker", "sys", "memory")) {
		t.Errorf("memory dir %s, want the bind-mounted directory itself", c.Dir())
	}
}

func TestWarnings(t *testing.T) {
	w := strings.Join(Warnings(open(t, "v2-namespace").Sample()), "\n")
	if !strings.Contains(w, "oom.group") {
		t.Errorf("no oom.group warning: %s", w)
	}
	if !strings.Contains(w, "flight record") || !strings.Contains(w, "previous_run") {
		t.Errorf("the oom.group warning does not say the flight record covers the next OOM: %s", w)
	}
	w = strings.Join(Warnings(open(t, "v2-unlimited-missing").Sample()), "\n")
	if !strings.Contains(w, "no memory limit") {
		t.Errorf("no limit warning: %s", w)
	}
	if !strings.Contains(w, "cannot read part of the container's cgroup (memory.stat (missing)") {
		t.Errorf("no warning about the missing memory.stat: %s", w)
	}
	// No PSI, no swap or oom.group file: normal on some kernels, no warning.
	for _, tree := range []string{"v1-docker", "v2-k8s-pod"} {
		if w := Warnings(open(t, tree).Sample()); len(w) != 0 {
			t.Errorf("%s: unexpected warnings: %v", tree, w)
		}
	}
	// A file that is there but cannot be read is one clear message, and its values are unknown.
	root := copyTree(t, "v1-docker")
	cpuStat := filepath.Join(root, "sys", "cpu,cpuacct", "cpu.stat")
	if err := os.Remove(cpuStat); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(cpuStat, 0o755); err != nil {
		t.Fatal(err)
	}
	st := openAt(t, root).Sample()
	if st.CPUThrottled.Known || st.CPUPeriods.Known {
		t.Errorf("unreadable cpu.stat read as known: %+v", st)
	}
	if w := Warnings(st); len(w) != 1 || !strings.Contains(w[0], "cpu.stat (unreadable)") {
		t.Errorf("warnings %v, want one naming cpu.stat", w)
	}
}

func TestOverridePath(t *testing.T) {
	root := filepath.Join("testdata", "v2-k8s-pod")
	c, err := Open(Options{CgroupRoot: filepath.Join(root, "sys"), ProcRoot: filepath.Join(root, "proc"), Path: "/kubepods.slice/kubepods-pod1.slice"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Path() != "/kubepods.slice/kubepods-pod1.slice" {
		t.Errorf("path %s", c.Path())
	}
	if _, err := Open(Options{CgroupRoot: t.TempDir(), ProcRoot: t.TempDir()}); err == nil {
		t.Error("an empty tree must not open")
	}
}

func TestParsers(t *testing.T) {
	if q, ok := parseCPUMax([]byte("max 100000\n")); ok || q != 0 {
		t.Error("max is no quota")
	}
	if q, ok := parseCPUMax([]byte("25000 100000")); !ok || q != 0.25 {
		t.Errorf("quota %v", q)
	}
	if v, err := parseMax([]byte("max\n")); err != nil || v < unlimitedAbove {
		t.Errorf("max %v %v", v, err)
	}
	s, f := parsePSI([]byte("some avg10=1.25 avg60=0 avg300=0 total=1\nfull avg10=0.50 avg60=0 avg300=0 total=1\n"))
	if s != 1.25 || f != 0.5 {
		t.Errorf("psi %v %v", s, f)
	}
	if m := parseMountinfo([]byte(`35 30 0:30 /a\040b /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory`)); len(m) != 1 || m[0].root != "/a b" {
		t.Errorf("mountinfo %+v", m)
	}
}

func BenchmarkSample(b *testing.B) {
	for _, tree := range []string{"v1-hybrid", "v2-namespace"} {
		root := filepath.Join("testdata", tree)
		c, err := Open(Options{CgroupRoot: filepath.Join(root, "sys"), ProcRoot: filepath.Join(root, "proc")})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tree+"-fixture", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.Sample()
			}
		})
	}
	if c, err := Open(Options{}); err == nil {
		b.Run("this-host", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.Sample()
			}
		})
	}
}
