package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// TestMetricsAndTerminationMessage: under a real 200 MiB memory limit, one worker is OOM-killed
// and another times out sleeping; a scrape of /metrics counts one of each cause, passes promtool,
// and after TERM the termination message holds both verdicts.
func TestMetricsAndTerminationMessage(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testkit.Unavailable(t, "promtool is not installed (apt-get install prometheus)")
	}
	gunicorn := testkit.Gunicorn(t)
	cg := testkit.MemoryCgroup(t, 200<<20)
	dir := writeApp(t, testkit.AppShim())
	port, mport := freePort(t), freePort(t)
	term := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(term, []byte(strings.Repeat("old message ", 200)), 0o644); err != nil {
		t.Fatal(err)
	}
	argv := cg.Wrap(t, []string{gwrapBin, "--report-dir", t.TempDir(), "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mport),
		"--termination-log", term, "--", gunicorn, "--chdir", dir, "app:app", "--workers", "2", "--timeout", "3",
		"--graceful-timeout", "1", "--bind", fmt.Sprintf("127.0.0.1:%d", port)})
	p := startCmd(t, exec.Command(argv[0], argv[1:]...), nil)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitHTTP(t, base+"/", 30*time.Second)
	scrape := func() string {
		code, body := get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport), 5*time.Second)
		if code != 200 {
			t.Fatalf("/metrics answered %d", code)
		}
		return body
	}
	if body := scrape(); !strings.Contains(body, `gwrap_worker_kills_total{cause="oom_killed",role="http"} 0`) {
		t.Errorf("before any kill:\n%s", body)
	}
	go get(base+"/alloc?1000", 20*time.Second)
	p.stdout.waitEvent(t, 30*time.Second, "the OOM post-mortem", func(m map[string]any) bool {
		return m["event"] == "postmortem" && m["cause"] == "oom_killed"
	})
	go get(base+"/sleep?30", 20*time.Second)
	p.stdout.waitEvent(t, 30*time.Second, "the timeout post-mortem", func(m map[string]any) bool {
		return m["event"] == "postmortem" && m["cause"] == "blocked"
	})
	body := scrape()
	for _, want := range []string{
		`gwrap_worker_kills_total{cause="oom_killed",role="http"} 1`,
		`gwrap_worker_kills_total{cause="blocked",role="http"} 1`,
		`gwrap_worker_kills_total{cause="crashed",role="http"} 0`,
		`gwrap_oom_kills_total 1`,
		`gwrap_gunicorn_timeout_seconds{role="http"} 3`,
		`gwrap_container_memory_limit_bytes 2.097152e+08`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the scrape lacks %q", want)
		}
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(body)
	var out bytes.Buffer
	check.Stdout, check.Stderr = &out, &out
	if err := check.Run(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
	p.signal(t, syscall.SIGTERM)
	p.wait(t, 20*time.Second)
	msg, err := os.ReadFile(term)
	if err != nil {
		t.Fatal(err)
	}
	if len(msg) > 1024 || !strings.Contains(string(msg), "oom_killed") || !strings.Contains(string(msg), "blocked") || strings.Contains(string(msg), "old message") {
		t.Errorf("termination message (%d bytes):\n%s", len(msg), msg)
	}
}
