package memwatch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Options say where to look. Every root is injectable so fixture trees stand in for a host.
type Options struct {
	CgroupRoot string // where the host mounts cgroups (default /sys/fs/cgroup); mount points under it are rebased here
	ProcRoot   string // default /proc
	Path       string // override: the cgroup path (as in /proc/self/cgroup), "" = discover
	PID        int    // whose cgroup; 0 = self
}

// ErrNoCgroup is returned by Open when no cgroup with a memory controller can be found.
var ErrNoCgroup = errors.New("no memory cgroup found")

// mount is one cgroup mount from mountinfo.
type mount struct {
	root   string // the mount's root inside the cgroup filesystem (field 4)
	point  string // where it is mounted (field 5), rebased under Options.CgroupRoot
	fstype string // cgroup or cgroup2
	opts   string // super options: the v1 controllers
}

// parseMountinfo reads /proc/<pid>/mountinfo's cgroup mounts.
// Format: `36 35 98:0 /root /mnt rw,relatime shared:1 - cgroup cgroup rw,memory`.
func parseMountinfo(b []byte) []mount {
	var out []mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if len(f) < 5 || len(g) < 3 || (g[0] != "cgroup" && g[0] != "cgroup2") {
			continue
		}
		out = append(out, mount{root: unescape(f[3]), point: unescape(f[4]), fstype: g[0], opts: g[2]})
	}
	return out
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var n int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &n); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseProcCgroup reads /proc/<pid>/cgroup: controller → path; the v2 entry is under "".
func parseProcCgroup(b []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out
}

// hasController reports whether a v1 mount carries the controller.
func (m mount) hasController(c string) bool {
	for _, o := range strings.Split(m.opts, ",") {
		if o == c {
			return true
		}
	}
	return false
}

// dirFor resolves a cgroup path (as /proc/self/cgroup shows it) to a directory under the mount.
// With a cgroup namespace the path is already relative to the mount ("/"); in Docker's v1 layout
// the container's own directory is mounted, so mountinfo's root equals the path and the answer is
// the mount point itself (the case containerd's path helpers get wrong: TestDockerLayoutResolvesToTheMount).
func (m mount) dirFor(path string) string {
	switch {
	case m.root == "/" || m.root == "":
		return filepath.Join(m.point, path)
	case path == m.root:
		return m.point
	case strings.HasPrefix(path, m.root+"/"):
		return filepath.Join(m.point, strings.TrimPrefix(path, m.root))
	default:
		// The path is not under the mount's root (a namespaced path on a host mount): the mount
		// is the best we can see.
		return m.point
	}
}

// rebase maps a host mount point under /sys/fs/cgroup to the injected root.
func rebase(point, root string) string {
	const std = "/sys/fs/cgroup"
	if root == "" || root == std {
		return point
	}
	if point == std {
		return root
	}
	if strings.HasPrefix(point, std+"/") {
		return filepath.Join(root, strings.TrimPrefix(point, std))
	}
	return point
}

// layout is where the container's cgroup files are.
type layout struct {
	version    int
	path       string // the cgroup path
	memDir     string // memory controller directory (v1) or the cgroup directory (v2)
	memTop     string // the top of the memory hierarchy visible to us (walk limits up to here)
	cpuDir     string // v1 cpu controller directory ("" when absent); v2: memDir
	cpuTop     string
	cpuacctDir string // v1 cpuacct
	psiDir     string // a directory with memory.pressure/cpu.pressure (v2 or the unified mount), "" = none
	psiRoot    bool   // psiDir is the unified mount's root (on a hybrid host, the whole host's)
}

func discover(opt Options) (layout, error) {
	proc := opt.ProcRoot
	if proc == "" {
		proc = "/proc"
	}
	who := "self"
	if opt.PID > 0 {
		who = fmt.Sprint(opt.PID)
	}
	cgb, err := os.ReadFile(filepath.Join(proc, who, "cgroup"))
	if err != nil {
		return layout{}, fmt.Errorf("%w: %w", ErrNoCgroup, err)
	}
	mib, err := os.ReadFile(filepath.Join(proc, who, "mountinfo"))
	if err != nil {
		return layout{}, fmt.Errorf("%w: %w", ErrNoCgroup, err)
	}
	paths := parseProcCgroup(cgb)
	mounts := parseMountinfo(mib)
	for i := range mounts {
		mounts[i].point = rebase(mounts[i].point, opt.CgroupRoot)
	}
	pathOf := func(ctrl string) string {
		if opt.Path != "" {
			return opt.Path
		}
		return paths[ctrl]
	}

	var l layout
	var unified *mount
	for i := range mounts {
		if mounts[i].fstype == "cgroup2" {
			unified = &mounts[i]
		}
	}
	for _, m := range mounts {
		if m.fstype != "cgroup" {
			continue
		}
		switch {
		case m.hasController("memory"):
			l.version, l.path = 1, pathOf("memory")
			l.memDir, l.memTop = m.dirFor(l.path), m.point
		}
		if m.hasController("cpu") {
			l.cpuDir, l.cpuTop = m.dirFor(pathOf("cpu")), m.point
		}
		if m.hasController("cpuacct") {
			l.cpuacctDir = m.dirFor(pathOf("cpuacct"))
		}
	}
	if unified != nil {
		dir := unified.dirFor(pathOf(""))
		if l.version == 0 && exists(filepath.Join(dir, "memory.current")) {
			l.version, l.path = 2, pathOf("")
			l.memDir, l.memTop = dir, unified.point
			l.cpuDir, l.cpuTop = dir, unified.point
		}
		if exists(filepath.Join(dir, "memory.pressure")) || exists(filepath.Join(dir, "cpu.pressure")) {
			l.psiDir, l.psiRoot = dir, dir == unified.point
		}
	}
	if l.version == 0 {
		return l, fmt.Errorf("%w (no v1 memory mount and no v2 memory.current in %s)", ErrNoCgroup, filepath.Join(proc, who, "mountinfo"))
	}
	if !exists(l.memDir) {
		return l, fmt.Errorf("%w: %s does not exist", ErrNoCgroup, l.memDir)
	}
	return l, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
