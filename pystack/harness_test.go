package pystack

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// gunicornVersion is one Gunicorn the live tests run: Debian's 20.1, and 23.0/26.x where
// scripts/deps.sh unpacked them under /var/cache/gwrap-test.
type gunicornVersion struct {
	name string
	argv []string // command up to the first Gunicorn flag
	env  []string // PYTHONPATH of the release, if any
}

func gunicorns(t *testing.T) []gunicornVersion {
	t.Helper()
	vs := []gunicornVersion{{name: "20.1", argv: []string{testkit.Gunicorn(t)}}}
	py := testkit.Python(t)
	for _, v := range []string{"23.0.0", "26.2.2"} {
		dir := "/var/cache/gwrap-test/gunicorn-" + v + "/usr/lib/python3/dist-packages"
		if _, err := os.Stat(filepath.Join(dir, "gunicorn")); err != nil {
			t.Logf("gunicorn %s not unpacked at %s (scripts/deps.sh): not tested", v, dir)
			continue
		}
		vs = append(vs, gunicornVersion{name: v, argv: []string{py, "-m", "gunicorn"}, env: []string{"PYTHONPATH=" + dir}})
	}
	return vs
}

// server is a running Gunicorn under test.
type server struct {
	cmd            *exec.Cmd
	sock, ready    string
	stdout, stderr *testkit.Buffer
	done           chan struct{}
}

// startGunicorn runs Gunicorn on a unix socket with the hook's environment (h nil: without the
// hook) and the app in testdata/app; extra are more Gunicorn flags, env more variables.
func startGunicorn(t *testing.T, h *Hook, g gunicornVersion, env []string, extra ...string) *server {
	t.Helper()
	testkit.RequireRoot(t) // the worker's fd table and signals of any uid; Debian's gunicorn
	dir := t.TempDir()
	s := &server{sock: filepath.Join(dir, "g.sock"), ready: filepath.Join(dir, "ready"), stdout: &testkit.Buffer{}, stderr: &testkit.Buffer{}, done: make(chan struct{})}
	// Workers may run as another user (--user): they must reach the ready directory.
	if err := os.Mkdir(s.ready, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.ready, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(dir), dir} { // t.TempDir's parent is 0700 too
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	appDir, err := filepath.Abs("testdata/app")
	if err != nil {
		t.Fatal(err)
	}
	argv := append(append([]string{}, g.argv...), "-b", "unix:"+s.sock, "--chdir", appDir, "--graceful-timeout", "1")
	argv = append(argv, extra...)
	environ := append(append(os.Environ(), g.env...), env...)
	environ = append(environ, "READY_DIR="+s.ready)
	if h != nil {
		environ = h.Env(environ)
	}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Env = environ
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
		if t.Failed() {
			t.Logf("gunicorn stderr:\n%s", s.stderr.String())
		}
	})
	return s
}

// workers waits for n workers of the master that loaded the hook (h nil: that exist).
func (s *server) workers(t *testing.T, h *Hook, n int) []int {
	t.Helper()
	master := s.cmd.Process.Pid
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", master, master))
		var pids []int
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			if h == nil {
				pids = append(pids, pid)
			} else if _, err := os.Stat(h.stackFile(pid)); err == nil {
				pids = append(pids, pid)
			}
		}
		if len(pids) >= n {
			return pids
		}
		select {
		case <-s.done:
			t.Fatalf("gunicorn exited: %v\n%s", s.cmd.ProcessState, s.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d workers after 20s\n%s", len(pids), n, s.stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling /proc with a deadline
	}
}

// get sends a request in the background; the response (if any) is dropped when the test ends.
func (s *server) get(t *testing.T, path string) <-chan error {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", s.sock)
	}}}
	res := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://gunicorn"+path, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		res <- err
	}()
	return res
}

// waitReady waits until the app created READY_DIR/name: a worker got the request.
func (s *server) waitReady(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(s.ready, name)); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app never reached %q\n%s", name, s.stderr.String())
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// marker returns the line of "# at:name" in testdata/app/file.
func marker(t *testing.T, file, name string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata/app", file))
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.HasSuffix(l, "# at:"+name) {
			return i + 1
		}
	}
	t.Fatalf("no marker %q in %s", name, file)
	return 0
}

// takeAt takes stacks of pid until the app's top frame is file:line (the worker may still be a
// few instructions before it), with a deadline; it fails with the last stack.
func takeAt(t *testing.T, h *Hook, pid int, file string, line int) (Stack, Top, time.Duration) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		st, err := h.Take(ctx, pid)
		took := time.Since(start)
		cancel()
		if err != nil {
			t.Fatalf("Take(%d): %v", pid, err)
		}
		top, ok := st.Top()
		if ok && filepath.Base(top.Frame.File) == file && top.Frame.Line == line {
			return st, top, took
		}
		if time.Now().After(deadline) {
			t.Fatalf("top of %d is %v (ok %v), want %s:%d; stack:\n%s", pid, top, ok, file, line, strings.Join(st.Lines(), "\n"))
		}
	}
}
