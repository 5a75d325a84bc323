//go:build v2guest && linux

package v2test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The guest's cgroup2 mount (scripts/v2vm.sh delegates +memory +cpu +pids from its root).
const cgRoot = "/sys/fs/cgroup"

// measure records a figure for the host test to report: "MEASURE name value".
func measure(t *testing.T, name string, format string, args ...any) {
	t.Helper()
	t.Logf("MEASURE %s %s", name, fmt.Sprintf(format, args...))
}

// cgroup is a child cgroup v2 made for one case; cleanup kills what runs in it and removes it.
type cgroup struct {
	Dir  string // e.g. /sys/fs/cgroup/gwrap-oom
	Path string // as /proc/<pid>/cgroup shows it, e.g. /gwrap-oom
}

// newCgroup makes cgRoot/rel (its parent must exist) and writes files into it, in order.
func newCgroup(t *testing.T, rel string, files ...string) *cgroup {
	t.Helper()
	c := &cgroup{Dir: filepath.Join(cgRoot, rel), Path: "/" + rel}
	if err := os.Mkdir(c.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.remove(t) })
	for i := 0; i+1 < len(files); i += 2 {
		c.write(t, files[i], files[i+1])
	}
	return c
}

func (c *cgroup) write(t *testing.T, name, value string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(c.Dir, name), []byte(value), 0o644); err != nil {
		t.Fatalf("writing %q to %s: %v", value, filepath.Join(c.Dir, name), err)
	}
}

// read returns a file of the cgroup, trimmed.
func (c *cgroup) read(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// key reads one "key value" line of a flat-keyed file (memory.events, cpu.stat).
func (c *cgroup) key(t *testing.T, file, key string) uint64 {
	t.Helper()
	for _, line := range strings.Split(c.read(t, file), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatalf("%s %s: %v", file, key, err)
			}
			return n
		}
	}
	t.Fatalf("%s has no %s", file, key)
	return 0
}

// remove kills everything in the cgroup (and below) and removes it, children first.
func (c *cgroup) remove(t *testing.T) {
	_ = os.WriteFile(filepath.Join(c.Dir, "cgroup.kill"), []byte("1"), 0o644)
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(c.Dir, "cgroup.events"))
		if err != nil || strings.Contains(string(b), "populated 0") || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	subs, _ := filepath.Glob(filepath.Join(c.Dir, "*", "cgroup.procs"))
	for _, s := range subs {
		_ = os.Remove(filepath.Dir(s))
	}
	if err := os.Remove(c.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("removing %s: %v", c.Dir, err)
	}
}

// command returns cmd set to start inside the cgroup (clone3 CLONE_INTO_CGROUP: no moment
// outside it), in its own process group.
func (c *cgroup) command(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	fd, err := syscall.Open(c.Dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd, Setpgid: true}
	return cmd
}

// startReady starts cmd and waits until its stdout prints a line "ready".
func startReady(t *testing.T, cmd *exec.Cmd, d time.Duration) {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != "ready" {
			err = fmt.Errorf("printed %q", line)
		}
		ready <- err
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("%v did not get ready: %v", cmd.Args, err)
		}
	case <-time.After(d):
		t.Fatalf("%v not ready within %v", cmd.Args, d)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eventTime is an event's timestamp.
func eventTime(t *testing.T, m map[string]any) time.Time {
	t.Helper()
	s, _ := m["time"].(string)
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("event time %q: %v", s, err)
	}
	return ts
}

// kmsgTimes returns the kernel log's timestamps (µs of the kernel's clock since boot) of records
// whose text contains what, read from /dev/kmsg.
func kmsgTimes(t *testing.T, what string) []time.Duration {
	t.Helper()
	fd, err := syscall.Open("/dev/kmsg", syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	var out []time.Duration
	buf := make([]byte, 8192)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EPIPE { // a record was overwritten before it was read
			continue
		}
		if err != nil || n <= 0 {
			return out // EAGAIN: the end of the log
		}
		prefix, msg, _ := strings.Cut(string(buf[:n]), ";")
		if f := strings.Split(prefix, ","); len(f) >= 3 && strings.Contains(msg, what) {
			if us, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				out = append(out, time.Duration(us)*time.Microsecond)
			}
		}
	}
}

// monotonic is CLOCK_MONOTONIC now.
func monotonic() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// kmsgOffset is CLOCK_MONOTONIC minus the kernel log's clock, measured by logging a mark; the
// second result bounds its error (the time the write took).
func kmsgOffset(t *testing.T) (time.Duration, time.Duration) {
	t.Helper()
	mark := fmt.Sprintf("gwrap-v2test mark %d", time.Now().UnixNano())
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := monotonic()
	if _, err := f.WriteString(mark + "\n"); err != nil { // without a newline the record stays open for continuation
		t.Fatal(err)
	}
	after := monotonic()
	ts := kmsgTimes(t, mark)
	if len(ts) != 1 {
		t.Fatalf("the mark was logged %d times", len(ts))
	}
	return before - ts[0], after - before
}
