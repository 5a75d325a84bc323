package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// gwrapBin is the gwrap binary built once for the whole-binary tests.
var gwrapBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gwrap-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gwrapBin = filepath.Join(dir, "gwrap")
	build := exec.Command("go", "build", "-race", "-o", gwrapBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building gwrap:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lineLog collects a process's output lines while the test reads them.
type lineLog struct {
	mu    sync.Mutex
	lines []string
	cond  *sync.Cond
	done  bool
}

func newLineLog(r io.Reader) *lineLog {
	l := &lineLog{}
	l.cond = sync.NewCond(&l.mu)
	go func() {
		br := bufio.NewReaderSize(r, 1<<20)
		for {
			s, err := br.ReadString('\n')
			if s != "" {
				l.mu.Lock()
				l.lines = append(l.lines, strings.TrimSuffix(s, "\n"))
				l.cond.Broadcast()
				l.mu.Unlock()
			}
			if err != nil {
				l.mu.Lock()
				l.done = true
				l.cond.Broadcast()
				l.mu.Unlock()
				return
			}
		}
	}()
	return l
}

func (l *lineLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// events decodes every JSON line so far; it fails the test on a line that is not JSON.
func (l *lineLog) events(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, s := range l.snapshot() {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("stdout line is not JSON: %q: %v", s, err)
		}
		out = append(out, m)
	}
	return out
}

// waitEvent waits until an event matching pred appears and returns it.
func (l *lineLog) waitEvent(t testing.TB, d time.Duration, what string, pred func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(d)
	timer := time.AfterFunc(d, func() { l.mu.Lock(); l.cond.Broadcast(); l.mu.Unlock() })
	defer timer.Stop()
	seen := 0
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		for ; seen < len(l.lines); seen++ {
			var m map[string]any
			if json.Unmarshal([]byte(l.lines[seen]), &m) == nil && pred(m) {
				return m
			}
		}
		if l.done || time.Now().After(deadline) {
			t.Fatalf("no %s within %v; output:\n%s", what, d, strings.Join(l.lines, "\n"))
		}
		l.cond.Wait()
	}
}

func isEvent(name string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["event"] == name }
}

// proc is a running gwrap.
type proc struct {
	cmd    *exec.Cmd
	stdout *lineLog
	stderr *bytes.Buffer
	waited chan struct{}
	err    error
}

type lockedBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

// startGwrap starts the built gwrap with args; cleanup kills its whole process group.
func startGwrap(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(gwrapBin, args...), env)
}

func startCmd(t testing.TB, cmd *exec.Cmd, env []string) *proc {
	t.Helper()
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stderr: &bytes.Buffer{}, waited: make(chan struct{})}
	var errBuf lockedBuffer
	cmd.Stderr = &errBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.stdout = newLineLog(out)
	go func() {
		p.err = cmd.Wait()
		errBuf.mu.Lock()
		p.stderr.Write(errBuf.Bytes())
		errBuf.mu.Unlock()
		close(p.waited)
	}()
	t.Cleanup(func() {
		// gwrap starts Gunicorn in a process group of its own: kill every descendant's group too,
		// or a Gunicorn left behind keeps serving, and keeps fds it inherited (such as the
		// flock of /tmp/gwrap-live.lock) open for ever.
		for _, pid := range append(descendants(cmd.Process.Pid), cmd.Process.Pid) {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		<-p.waited
	})
	return p
}

// descendants lists the pids of root's children, grandchildren…, read from /proc.
func descendants(root int) []int {
	parent := map[int]int{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces and parentheses.
		if i := bytes.LastIndexByte(b, ')'); i > 0 {
			var state string
			var ppid int
			if _, err := fmt.Sscan(string(b[i+1:]), &state, &ppid); err == nil {
				parent[pid] = ppid
			}
		}
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for c, pp := range parent {
			if pp == p {
				out = append(out, c)
				walk(c)
			}
		}
	}
	walk(root)
	return out
}

// wait waits for gwrap to exit and returns its exit code.
func (p *proc) wait(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-p.waited:
	case <-time.After(d):
		t.Fatalf("gwrap did not exit within %v; output:\n%s", d, strings.Join(p.stdout.snapshot(), "\n"))
	}
	// The reader sees EOF after the process is gone; wait for the last lines.
	p.stdout.mu.Lock()
	for !p.stdout.done {
		p.stdout.cond.Wait()
	}
	p.stdout.mu.Unlock()
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writeApp writes a WSGI app module app.py into a new directory and returns it.
func writeApp(t testing.TB, src string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.py"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// get fetches a URL, returning the body or the error text.
func get(url string, timeout time.Duration) (int, string) {
	c := http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitHTTP waits until the URL answers 200.
func waitHTTP(t testing.TB, url string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if code, _ := get(url, time.Second); code == 200 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer 200 within %v", url, d)
}

// testApp is the app.py the whole-binary tests run: the shared WSGI app of internal/testkit/apps,
// whose routes misbehave on purpose (/sleep, /spin, /cloop, /alloc, /pressure, /connect, /segv…).
var testApp = testkit.AppShim()
