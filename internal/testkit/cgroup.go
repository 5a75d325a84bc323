package testkit

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Cgroup is a child cgroup v1 made for one test, under the test process's own cgroup of that
// controller; t.Cleanup kills what runs in it and removes it.
type Cgroup struct {
	Dir string // e.g. /sys/fs/cgroup/memory/<ours>/gwrap-test-123
}

// V1Root is where the v1 controllers are mounted, one directory each (memory, cpu): the default of
// this machine and of most v1 hosts. Tests of other layouts use fixture trees instead.
var V1Root = "/sys/fs/cgroup"

// MemoryCgroup makes a child memory cgroup with a hard limit of limit bytes (no swap here).
func MemoryCgroup(t testing.TB, limit int64) *Cgroup {
	t.Helper()
	c := child(t, "memory")
	c.write(t, "memory.limit_in_bytes", strconv.FormatInt(limit, 10))
	if _, err := os.Stat(filepath.Join(c.Dir, "memory.memsw.limit_in_bytes")); err == nil {
		c.write(t, "memory.memsw.limit_in_bytes", strconv.FormatInt(limit, 10))
	}
	return c
}

// CPUCgroup makes a child cpu cgroup with a CFS quota of cores (period 100 ms).
func CPUCgroup(t testing.TB, cores float64) *Cgroup {
	t.Helper()
	c := child(t, "cpu")
	c.write(t, "cpu.cfs_period_us", "100000")
	c.write(t, "cpu.cfs_quota_us", strconv.Itoa(int(cores*100000)))
	return c
}

// Wrap returns argv run inside the cgroup: a shell moves itself in, then execs argv.
func (c *Cgroup) Wrap(t *testing.T, argv []string) []string {
	return append([]string{"/bin/sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, c.Dir}, argv...)
}

// Add moves a process into the cgroup.
func (c *Cgroup) Add(pid int) error {
	return os.WriteFile(filepath.Join(c.Dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
}

func (c *Cgroup) write(t testing.TB, file, v string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(c.Dir, file), []byte(v), 0o644); err != nil {
		t.Fatalf("cgroup %s: %v", file, err)
	}
}

// child creates <mount>/<own path>/gwrap-test-N for a v1 controller.
func child(t testing.TB, ctrl string) *Cgroup {
	t.Helper()
	RequireRoot(t)
	mount := filepath.Join(V1Root, ctrl)
	if _, err := os.Stat(mount); err != nil {
		Unavailable(t, "no cgroup v1 %s controller at %s", ctrl, mount)
	}
	own, err := ownPath(ctrl)
	if err != nil {
		Unavailable(t, "cannot read our %s cgroup: %v", ctrl, err)
	}
	dir := filepath.Join(mount, own, fmt.Sprintf("gwrap-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		Unavailable(t, "cannot create a %s cgroup: %v", ctrl, err)
	}
	c := &Cgroup{Dir: dir}
	t.Cleanup(func() { c.remove(t) })
	return c
}

// ownPath reads this process's path for a controller from /proc/self/cgroup.
func ownPath(ctrl string) (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 {
			for _, c := range strings.Split(parts[1], ",") {
				if c == ctrl {
					return parts[2], nil
				}
			}
		}
	}
	return "", fmt.Errorf("no %s line", ctrl)
}

// remove kills every process in the cgroup and removes it.
func (c *Cgroup) remove(t testing.TB) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(c.Dir, "cgroup.procs"))
		pids := strings.Fields(string(b))
		for _, p := range pids {
			if n, err := strconv.Atoi(p); err == nil {
				_ = syscall.Kill(n, syscall.SIGKILL)
			}
		}
		err := os.Remove(c.Dir)
		if err == nil || os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("cannot remove cgroup %s: %v", c.Dir, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
