package containertest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// The test image's settings (scripts/container/Containerfile): the report dir is a volume there.
const (
	imageReportDir = "/var/log/gwrap"
	appPort        = 8000
	memoryLimit    = 256 << 20 // every case's --memory
	metricsPort    = 9191
)

// engine is the container engine the cases drive and what they expect of it.
type engine struct {
	image   string
	runtime string        // the OCI runtime podman must be configured with (runc, crun)
	cgroup  int           // the cgroup version gwrap must find
	slow    time.Duration // how much slower than real time the machine runs (1 here, more emulated)
	timeout int           // Gunicorn's --timeout for the cases that time a worker out
	// hostNetwork runs containers on the machine's network, each on a port of its own (PORT),
	// rather than publishing its port from a bridge: the cgroup v2 guest's kernel cannot load
	// the bridge and netfilter modules a bridge needs.
	hostNetwork bool
}

// check fails the test unless podman runs containers with the expected runtime.
func (e *engine) check(t *testing.T) {
	t.Helper()
	if got := podman(t, "info", "--format", "{{.Host.OCIRuntime.Name}}"); got != e.runtime {
		t.Fatalf("podman runs containers with %q, want %q", got, e.runtime)
	}
}

// scale is d on this engine's machine.
func (e *engine) scale(d time.Duration) time.Duration { return d * e.slow }

// podman runs podman with args and returns its stdout, trimmed; it fails the test on an error.
func podman(t testing.TB, args ...string) string {
	t.Helper()
	out, err := podmanErr(args...)
	if err != nil {
		t.Fatalf("podman %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func podmanErr(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("podman", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// spec is one container: podman run's options and the arguments after the image (to the
// entrypoint).
type spec struct {
	opts    []string
	args    []string
	port    int  // the app's port in the container (appPort when 0)
	metrics bool // serve gwrap's /metrics (GWRAP_METRICS_ADDR) and publish it
	// reports is the host directory mounted at the image's report dir (a new one when ""); its
	// owner is set to owner ("" leaves root's).
	reports string
	owner   string
}

// container is one container the test made; cleanup removes it with its anonymous volumes.
type container struct {
	e       *engine
	name    string
	id      string
	port    int    // the app's port on 127.0.0.1
	metrics int    // gwrap's /metrics port on 127.0.0.1 (0 when not published)
	reports string // the host directory at the report dir
	out     *testkit.Events
	skip    int // log lines of earlier runs (before the last start)
}

// run starts a container of e's image with a 256 MiB memory limit, its app port published on
// 127.0.0.1, and follows its log.
func (e *engine) run(t *testing.T, s spec) *container {
	t.Helper()
	if s.port == 0 {
		s.port = appPort
	}
	if s.reports == "" {
		s.reports = t.TempDir()
		if s.owner != "" {
			if out, err := exec.Command("chown", s.owner, s.reports).CombinedOutput(); err != nil {
				t.Fatalf("chown %s: %v %s", s.owner, err, out)
			}
		}
	}
	c := &container{e: e, name: "gwrap-ct-" + randomHex(4), reports: s.reports}
	args := []string{"run", "-d", "--name", c.name, "--memory", fmt.Sprint(memoryLimit), "-v", s.reports + ":" + imageReportDir}
	switch {
	case e.hostNetwork:
		c.port = freePort(t)
		// A host name of its own, as on a bridge (gwrap's flight record is keyed by it); on the
		// host's network podman would give it the machine's.
		args = append(args, "--network", "host", "--uts", "private", "--hostname", c.name, "-e", fmt.Sprintf("PORT=%d", c.port))
		if s.metrics {
			c.metrics = freePort(t)
			args = append(args, "-e", fmt.Sprintf("GWRAP_METRICS_ADDR=127.0.0.1:%d", c.metrics))
		}
	default:
		args = append(args, "-p", fmt.Sprintf("127.0.0.1::%d", s.port))
		if s.metrics {
			args = append(args, "-p", fmt.Sprintf("127.0.0.1::%d", metricsPort), "-e", fmt.Sprintf("GWRAP_METRICS_ADDR=:%d", metricsPort))
		}
	}
	args = append(args, s.opts...)
	args = append(args, e.image)
	args = append(args, s.args...)
	c.id = podman(t, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("container %s (%s) log:\n%s", c.name, c.id, c.out.Text())
		}
		_, _ = podmanErr("rm", "-f", "-v", "-t", "0", c.id) // ends the log's follower too
	})
	if !e.hostNetwork {
		c.port = c.published(t, s.port)
		if s.metrics {
			c.metrics = c.published(t, metricsPort)
		}
	}
	c.followLog(t)
	return c
}

// published is the host port of the container's port.
func (c *container) published(t *testing.T, port int) int {
	t.Helper()
	out := podman(t, "port", c.id, fmt.Sprintf("%d/tcp", port))
	_, p, ok := strings.Cut(strings.Fields(out + " ")[0], ":")
	n, err := strconv.Atoi(p)
	if !ok || err != nil {
		t.Fatalf("podman port %s %d: %q", c.name, port, out)
	}
	return n
}

// followLog follows the container's log (stdout and stderr) from its first line.
func (c *container) followLog(t *testing.T) {
	t.Helper()
	pr, pw := io.Pipe()
	cmd := exec.Command("podman", "logs", "-f", c.id)
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.out = testkit.CollectEvents(pr)
	go func() { _ = cmd.Wait(); pw.Close() }()
}

// wait returns the first event after the last start with pred, or fails after d (scaled).
func (c *container) wait(t *testing.T, d time.Duration, what string, pred func(map[string]any) bool) map[string]any {
	t.Helper()
	m, _ := c.out.WaitAfter(t, c.skip, c.e.scale(d), what, pred)
	return m
}

// waitAll waits until n events since the last start match pred, and returns them.
func (c *container) waitAll(t *testing.T, d time.Duration, what string, n int, pred func(map[string]any) bool) []map[string]any {
	t.Helper()
	var out []map[string]any
	for from := c.skip; len(out) < n; {
		m, i := c.out.WaitAfter(t, from, c.e.scale(d), what, pred)
		out = append(out, m)
		from = i + 1
	}
	return out
}

// events are the events since the last start.
func (c *container) events() []map[string]any { return c.out.All(c.skip) }

// ready waits until the app answers on / and returns gwrap.start.
func (c *container) ready(t *testing.T) map[string]any {
	t.Helper()
	deadline := time.Now().Add(c.e.scale(time.Minute))
	for {
		if code, _, err := c.get("/", 5*time.Second); err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the app did not answer within %v; log:\n%s", c.e.scale(time.Minute), c.out.Text())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c.wait(t, 10*time.Second, "gwrap.start", testkit.IsEvent("gwrap.start"))
}

// get sends GET path to the app and returns the status and body.
func (c *container) get(path string, timeout time.Duration) (int, string, error) {
	hc := http.Client{Timeout: timeout}
	resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d%s", c.port, path))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// response is the end of a request sent in the background.
type response struct {
	code int
	body string
	err  error
	at   time.Time
}

// send sends GET path in the background; the channel gets its end.
func (c *container) send(path string) <-chan response {
	ch := make(chan response, 1)
	go func() {
		code, body, err := c.get(path, 10*time.Minute)
		ch <- response{code, body, err, time.Now()}
	}()
	return ch
}

// busy waits until gwrap's /metrics counts n workers in a request (gwrap_workers_busy).
func (c *container) busy(t *testing.T, n int) {
	t.Helper()
	if c.metrics == 0 {
		t.Fatal("busy needs spec.metrics")
	}
	want := regexp.MustCompile(fmt.Sprintf(`(?m)^gwrap_workers_busy(\{role="http"\})? %d$`, n))
	deadline := time.Now().Add(c.e.scale(30 * time.Second))
	for {
		hc := http.Client{Timeout: 5 * time.Second}
		if resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", c.metrics)); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want.Match(b) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gwrap_workers_busy never reached %d", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop runs podman stop -t secs and returns how long it took.
func (c *container) stop(t *testing.T, secs int) time.Duration {
	t.Helper()
	start := time.Now()
	podman(t, "stop", "-t", fmt.Sprint(secs), c.id)
	return time.Since(start)
}

// exitCode waits for the container to exit and returns its exit code.
func (c *container) exitCode(t *testing.T) int {
	t.Helper()
	out := podman(t, "wait", c.id)
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("podman wait: %q", out)
	}
	return n
}

// start starts the stopped container again and follows its new run's log.
func (c *container) start(t *testing.T) {
	t.Helper()
	seen := c.out.Len()
	podman(t, "start", c.id)
	c.followLog(t)
	// The new follower reads the log from its first line: the earlier runs' lines come first.
	deadline := time.Now().Add(c.e.scale(30 * time.Second))
	for c.out.Len() < seen && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	c.skip = seen
}

// inspect returns a podman inspect field (a Go template).
func (c *container) inspect(t *testing.T, format string) string {
	t.Helper()
	return podman(t, "inspect", "--format", format, c.id)
}

// hostPID is the container's PID 1 (gwrap) as this machine sees it.
func (c *container) hostPID(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(c.inspect(t, "{{.State.Pid}}"))
	if err != nil || n <= 0 {
		t.Fatalf("the container's pid: %v", err)
	}
	return n
}

// hostname is the container's host name (gwrap's flight record and reports are keyed by it).
func (c *container) hostname(t *testing.T) string {
	t.Helper()
	return c.inspect(t, "{{.Config.Hostname}}")
}

// hostPath maps a path under the image's report dir to the host directory mounted there.
func (c *container) hostPath(t *testing.T, path string) string {
	t.Helper()
	rel, err := filepath.Rel(imageReportDir, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("%q is not under %s", path, imageReportDir)
	}
	return filepath.Join(c.reports, rel)
}

// report reads the report a postmortem event names, once it is written: gwrap writes reports
// off the event path (the event names the path the report will have), atomically.
func (c *container) report(t *testing.T, pm map[string]any) map[string]any {
	t.Helper()
	path, _ := pm["report"].(string)
	if path == "" {
		t.Fatalf("the postmortem names no report file: %v", pm)
	}
	var b []byte
	var err error
	for deadline := time.Now().Add(c.e.scale(10 * time.Second)); ; {
		if b, err = os.ReadFile(c.hostPath(t, path)); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	var rep map[string]any
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report %s: %v", path, err)
	}
	return rep
}

// rss is a process's resident memory (VmRSS) in bytes, from this machine's /proc.
func rss(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/status has no VmRSS", pid)
	return 0
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// freePort is a TCP port free on 127.0.0.1 a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// field reads a nested field of a decoded JSON object.
func field(m map[string]any, path ...string) any {
	var v any = m
	for _, k := range path {
		mm, _ := v.(map[string]any)
		v = mm[k]
	}
	return v
}

// num is a JSON number field as an int (-1 when absent or not a number).
func num(m map[string]any, key string) int {
	f, ok := m[key].(float64)
	if !ok {
		return -1
	}
	return int(f)
}
