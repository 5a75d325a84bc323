package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// serve starts the real HTTP server on a free port and returns a scrape function.
func serve(t *testing.T, m *Metrics) func() string {
	t.Helper()
	s, err := Listen("127.0.0.1:0", m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	url := "http://" + s.Addr().String() + "/metrics"
	return func() string {
		t.Helper()
		r, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		if r.StatusCode != 200 {
			t.Fatalf("%s: %s\n%s", url, r.Status, b)
		}
		return string(b)
	}
}

func fed() *Metrics {
	m := New(Options{Version: "1.2.3", LateShares: []float64{0.5, 0.8}})
	m.WorkerStarted(RoleHTTP)
	m.WorkerStarted(RoleHTTP)
	m.WorkerKilled("oom_killed", RoleHTTP)
	m.WorkerKilled("blocked", RoleHTTP)
	m.WorkerKilled("blocked", "")
	m.WorkerKilled("made_up", "made_up") // counted as unknown, http
	m.OOMKills(2)
	m.WorkerLate(0.8, RoleHTTP)
	m.SetWorkers(2, 12500*time.Millisecond)
	m.SetGunicorn("20.1.0", "sync", 30*time.Second)
	m.SetContainer(Container{WorkingSetBytes: Known(100 << 20), LimitBytes: Known(512 << 20), ThrottledSeconds: Known(1.5),
		MemorySome: Known(0.02), MemoryFull: Known(0.01), CPUSome: Known(0.1)})
	m.SetSaturation(Saturation{Busy: Known(2), Queues: []Queue{{Listener: "127.0.0.1:8000", Length: Known(7), Max: Known(2048)}}})
	return m
}

func TestExpositionValues(t *testing.T) {
	text := serve(t, fed())()
	for _, want := range []string{
		`gwrap_worker_kills_total{cause="oom_killed",role="http"} 1`,
		`gwrap_worker_kills_total{cause="blocked",role="http"} 2`,
		`gwrap_worker_kills_total{cause="unknown",role="http"} 1`,
		`gwrap_worker_kills_total{cause="cpu_bound",role="http"} 0`, // exists before the first kill
		`gwrap_oom_kills_total 2`,
		`gwrap_worker_late_total{role="http",share="0.5"} 0`,
		`gwrap_worker_late_total{role="http",share="0.8"} 1`,
		`gwrap_workers_started_total{role="http"} 2`,
		`gwrap_workers{role="http"} 2`,
		`gwrap_workers_busy{role="http"} 2`,
		`gwrap_worker_heartbeat_age_max_seconds{role="http"} 12.5`,
		`gwrap_gunicorn_timeout_seconds{role="http"} 30`,
		`gwrap_container_memory_working_set_bytes 1.048576e+08`,
		`gwrap_container_memory_limit_bytes 5.36870912e+08`,
		`gwrap_container_cpu_throttled_seconds_total 1.5`,
		`gwrap_container_memory_pressure_ratio{kind="full",scope="container"} 0.01`,
		`gwrap_container_cpu_pressure_ratio{kind="some",scope="container"} 0.1`,
		`gwrap_listen_queue_length{listener="127.0.0.1:8000"} 7`,
		`gwrap_listen_queue_max{listener="127.0.0.1:8000"} 2048`,
		`gwrap_build_info{goversion="` + goVersion + `",version="1.2.3"} 1`,
		`gwrap_gunicorn_info{version="20.1.0",worker_class="sync"} 1`,
		`gwrap_process_resident_memory_bytes `,
	} {
		if !strings.Contains(text, want+"\n") && !strings.Contains(text, want) {
			t.Errorf("missing %q", want)
		}
	}
	if strings.Contains(text, "pid=") {
		t.Error("a series has a pid label")
	}
	if strings.Contains(text, `role="dirty"`) || strings.Contains(text, "gwrap_dirty_execution_timeouts_total{") {
		t.Error("dirty series without dirty workers")
	}
}

// TestDirtyRole: dirty workers are counted in the same families with role="dirty" (and the
// arbiter's death with role="dirty_arbiter"), their series exist at 0 once the master is known to
// run them, and an action past --dirty-timeout is counted apart: no worker died.
func TestDirtyRole(t *testing.T) {
	m := fed()
	m.SetDirtyTimeout(300 * time.Second)
	m.WorkerStarted(RoleDirty)
	m.WorkerKilled("cpu_bound", RoleDirty)
	m.WorkerKilled("crashed", RoleDirtyArbiter)
	m.WorkerLate(0.5, RoleDirty)
	m.ExecTimeout("blocked")
	m.SetSaturation(Saturation{Busy: Known(1), DirtyWorkers: Known(2), DirtyHeartbeatAgeMax: Known(140)})
	text := serve(t, m)()
	for _, want := range []string{
		`gwrap_worker_kills_total{cause="cpu_bound",role="dirty"} 1`,
		`gwrap_worker_kills_total{cause="oom_killed",role="dirty"} 0`,
		`gwrap_worker_kills_total{cause="crashed",role="dirty_arbiter"} 1`,
		`gwrap_worker_kills_total{cause="oom_killed",role="http"} 1`,
		`gwrap_workers_started_total{role="dirty"} 1`,
		`gwrap_worker_late_total{role="dirty",share="0.5"} 1`,
		`gwrap_dirty_execution_timeouts_total{cause="blocked"} 1`,
		`gwrap_dirty_execution_timeouts_total{cause="cpu_bound"} 0`,
		`gwrap_workers{role="dirty"} 2`,
		`gwrap_workers{role="http"} 2`,
		`gwrap_worker_heartbeat_age_max_seconds{role="dirty"} 140`,
		`gwrap_gunicorn_timeout_seconds{role="dirty"} 300`,
		`gwrap_gunicorn_timeout_seconds{role="http"} 30`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("missing %q", want)
		}
	}
	if strings.Contains(text, `gwrap_workers_busy{role="dirty"}`) {
		t.Error("dirty workers serve no HTTP: no busy series")
	}
}

// TestAbsentIsAbsent: what was never read (no limit, no PSI, no listener, timeout disabled)
// has no series at all rather than a 0.
func TestAbsentIsAbsent(t *testing.T) {
	m := New(Options{})
	m.SetGunicorn("", "gthread", 0)
	m.SetWorkers(0, -1)
	m.SetContainer(Container{WorkingSetBytes: Known(1 << 20)})
	text := serve(t, m)()
	for _, absent := range []string{"gwrap_container_memory_limit_bytes ", "gwrap_gunicorn_timeout_seconds{",
		"gwrap_worker_heartbeat_age_max_seconds{", "gwrap_workers_busy{", "gwrap_listen_queue_length{", "_pressure_ratio{",
		"gwrap_container_cpu_throttled_seconds_total "} {
		if strings.Contains(text, absent) {
			t.Errorf("%q present:\n%s", absent, text)
		}
	}
	if !strings.Contains(text, "gwrap_workers{role=\"http\"} 0\n") || !strings.Contains(text, "gwrap_container_memory_working_set_bytes 1.048576e+06\n") {
		t.Errorf("known zero or value missing:\n%s", text)
	}
}

// TestPromtool runs Debian's promtool on the exposition of a fed registry.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testkit.Unavailable(t, "promtool is not installed (apt-get install prometheus)")
	}
	text := serve(t, fed())()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s\n--- exposition:\n%s", err, out, text)
	}
}

// TestSlowLiveDoesNotBlockFeeders: while a scrape is stuck in the Live hook, every feeder
// method returns, and the next scrape within LiveEvery reuses the result instead of calling
// the hook again.
func TestSlowLiveDoesNotBlockFeeders(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	now := time.Unix(1000, 0)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	m := New(Options{LiveEvery: time.Second, Now: func() time.Time { return *clock.Load() }, Live: func() (Saturation, error) {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
		return Saturation{Busy: Known(float64(calls.Load())), Workers: Known(9), HeartbeatAgeMax: Known(3.5),
			Queues: []Queue{{Listener: "0.0.0.0:80", Length: Known(3)}}}, nil
	}})
	scrape := serve(t, m)
	first := make(chan string, 1)
	go func() { first <- scrape() }()
	<-entered
	m.SetWorkers(4, time.Second)
	m.WorkerKilled("blocked", RoleHTTP)
	m.SetContainer(Container{})
	m.SetSaturation(Saturation{})
	m.OOMKills(1)
	close(release)
	if text := <-first; !strings.Contains(text, "gwrap_workers{role=\"http\"} 9\n") || !strings.Contains(text, "gwrap_worker_heartbeat_age_max_seconds{role=\"http\"} 3.5\n") ||
		!strings.Contains(text, "gwrap_workers_busy{role=\"http\"} 1\n") || !strings.Contains(text, `gwrap_listen_queue_length{listener="0.0.0.0:80"} 3`) {
		t.Errorf("first scrape:\n%s", text)
	}
	if text := scrape(); !strings.Contains(text, "gwrap_workers_busy{role=\"http\"} 1\n") || calls.Load() != 1 {
		t.Errorf("within LiveEvery the hook ran %d times", calls.Load())
	}
	later := now.Add(time.Second)
	clock.Store(&later)
	if text := scrape(); !strings.Contains(text, "gwrap_workers_busy{role=\"http\"} 2\n") {
		t.Errorf("after LiveEvery:\n%s", text)
	}
}

func TestLiveErrorLeavesSeriesAbsent(t *testing.T) {
	m := New(Options{Live: func() (Saturation, error) { return Saturation{}, errors.New("master gone") }})
	m.SetSaturation(Saturation{Busy: Known(1)}) // replaced by the hook's (failed) reading
	if text := serve(t, m)(); strings.Contains(text, "\ngwrap_workers_busy ") {
		t.Errorf("stale busy after a failed read:\n%s", text)
	}
}

func TestListenBadAddress(t *testing.T) {
	if _, err := Listen("256.0.0.1:x", New(Options{})); err == nil {
		t.Error("a bad address bound")
	}
}

// TestScrapeIsNotCompressed: Prometheus asks for gzip; the few KiB are sent plain, since a gzip
// compressor costs about a MiB per scrape (1.3 MiB more RSS measured, for 4 KiB saved).
func TestScrapeIsNotCompressed(t *testing.T) {
	s, err := Listen("127.0.0.1:0", fed())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	req, err := http.NewRequest("GET", "http://"+s.Addr().String()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "gzip") // set by hand: the transport then leaves the body alone
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if enc := r.Header.Get("Content-Encoding"); enc != "" || !strings.Contains(string(b), "gwrap_worker_kills_total") {
		t.Errorf("Content-Encoding %q, body %.80q", enc, b)
	}
}

// TestRequestGauges: the requests in flight and the oldest one's age are two plain gauges (no
// path label: no unbounded label values), absent when requests are not recorded.
func TestRequestGauges(t *testing.T) {
	m := fed()
	if text := serve(t, m)(); strings.Contains(text, "gwrap_requests_in_flight ") || strings.Contains(text, "gwrap_request_oldest_seconds ") {
		t.Errorf("request gauges without recorded requests:\n%s", text)
	}
	m.SetSaturation(Saturation{RequestsInFlight: Known(3), RequestOldest: Known(31.25)})
	text := serve(t, m)()
	for _, want := range []string{"gwrap_requests_in_flight 3\n", "gwrap_request_oldest_seconds 31.25\n"} {
		if !strings.Contains(text, want) {
			t.Errorf("missing %q", want)
		}
	}
}
