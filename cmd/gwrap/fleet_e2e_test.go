package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// TestTerminationMessageWhileStopping: the termination message is written when a stop begins,
// naming the signal and the busy workers, so that a container the platform kills before the stop
// ends (its grace period shorter than Gunicorn's graceful timeout) still says why; gwrap's exit
// replaces it with the exit's reason once the request in flight has finished.
func TestTerminationMessageWhileStopping(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, testkit.AppShim())
	port, mport := freePort(t), freePort(t)
	term := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(term, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", mport),
		"--termination-log", term, "--stop-budget", "20s", "--", gunicorn, "--chdir", dir, "app:app", "--workers", "1",
		"--graceful-timeout", "15", "--bind", fmt.Sprintf("127.0.0.1:%d", port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitHTTP(t, base+"/", 30*time.Second)
	done := make(chan int, 1)
	go func() { code, _ := get(base+"/sleep?3", 20*time.Second); done <- code }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, body := get(fmt.Sprintf("http://127.0.0.1:%d/metrics", mport), time.Second); regexp.MustCompile(`(?m)^gwrap_workers_busy(\{role="http"\})? 1$`).MatchString(body) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request never showed as busy on /metrics")
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.signal(t, syscall.SIGTERM)
	want := "gwrap: SIGTERM at "
	var msg []byte
	for deadline := time.Now().Add(2 * time.Second); ; {
		msg, _ = os.ReadFile(term)
		if bytes.HasPrefix(msg, []byte(want)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, w := range []string{want, " began a graceful stop with 1 of 1 workers busy (Gunicorn's --graceful-timeout 15 s, gwrap's stop budget 20s), and the stop did not finish"} {
		if !bytes.Contains(msg, []byte(w)) {
			t.Errorf("while stopping, the termination message does not say %q:\n%s", w, msg)
		}
	}
	if code := <-done; code != 200 {
		t.Errorf("the request in flight ended %d, want 200", code)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if msg, _ := os.ReadFile(term); string(msg) != "gwrap: exited with code 0\n" {
		t.Errorf("after the exit, the termination message is %q", msg)
	}
}
