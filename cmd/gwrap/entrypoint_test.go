package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

func entrypoint(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "entrypoint.sh")
}

// TestEntrypointBuildsTheCommand runs entrypoint.sh with a fake gunicorn that prints its
// arguments: the defaults are added only where the user set nothing.
func TestEntrypointBuildsTheCommand(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "gunicorn")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"ARGS $*\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := []string{"GWRAP_BIN=" + gwrapBin, "GUNICORN_BIN=" + fake, "GWRAP_REPORT_DIR=" + t.TempDir(), "PORT=9123"}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"defaults", nil, nil, "ARGS app:app --bind 0.0.0.0:9123 --access-logfile - --error-logfile - --timeout 600 --graceful-timeout 7"},
		{"app module from env", nil, []string{"APP_MODULE=web:application", "WEB_CONCURRENCY=3"}, "ARGS web:application --bind 0.0.0.0:9123 --access-logfile - --error-logfile - --timeout 600 --graceful-timeout 7"},
		{"user settings win", []string{"app:app", "-t120", "--bind=unix:/tmp/s", "--error-logfile", "/tmp/e"}, nil, "ARGS app:app -t120 --bind=unix:/tmp/s --error-logfile /tmp/e --access-logfile - --graceful-timeout 7"},
		{"GUNICORN_CMD_ARGS counts", []string{"app:app"}, []string{"GUNICORN_CMD_ARGS=--timeout 300 --access-logfile /dev/null"}, "ARGS app:app --bind 0.0.0.0:9123 --error-logfile - --graceful-timeout 7"},
		{"no defaults", []string{"app:app"}, []string{"GWRAP_DEFAULTS=0"}, "ARGS app:app"},
		{"explicit gunicorn word", []string{"gunicorn", "app:app", "-w", "2"}, []string{"GWRAP_DEFAULTS=0"}, "ARGS app:app -w 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(entrypoint(t), tc.args...)
			p := startCmd(t, cmd, append(append([]string{}, base...), tc.env...))
			if tc.name == "explicit gunicorn word" {
				// "gunicorn" names the program, so the fake is not used: check the command gwrap got.
				p.wait(t, 10*time.Second)
				start := p.stdout.waitEvent(t, time.Second, "gwrap.start", isEvent("gwrap.start"))
				cmdline := fmt.Sprint(start["command"])
				if !strings.Contains(cmdline, "gunicorn app:app -w 2") {
					t.Errorf("command %s", cmdline)
				}
				return
			}
			if code := p.wait(t, 10*time.Second); code != 0 {
				t.Fatalf("exit %d; stderr %s", code, p.stderr)
			}
			ev := p.stdout.waitEvent(t, time.Second, "the fake's line", func(m map[string]any) bool {
				l, _ := m["line"].(string)
				return strings.HasPrefix(l, "ARGS")
			})
			// /dev/shm is added where the machine has it.
			got := strings.Replace(ev["line"].(string), " --worker-tmp-dir /dev/shm", "", 1)
			if tc.name == "app module from env" {
				got = strings.Replace(got, " --workers 3", "", 1)
			}
			if got != tc.want {
				t.Errorf("gunicorn got\n  %s\nwant\n  %s", got, tc.want)
			}
		})
	}
}

// TestEntrypointRunsGunicorn runs entrypoint.sh with Debian's gunicorn on the test app.
func TestEntrypointRunsGunicorn(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, testApp)
	port := freePort(t)
	cmd := exec.Command(entrypoint(t))
	cmd.Dir = dir
	p := startCmd(t, cmd, []string{"GWRAP_BIN=" + gwrapBin, "GUNICORN_BIN=" + gunicorn,
		"GWRAP_REPORT_DIR=" + t.TempDir(), fmt.Sprintf("PORT=%d", port), "GUNICORN_CMD_ARGS=--bind 127.0.0.1:" + fmt.Sprint(port)})
	start := p.stdout.waitEvent(t, 10*time.Second, "gwrap.start", isEvent("gwrap.start"))
	if start["timeout_s"] != float64(600) {
		t.Errorf("entrypoint's default timeout not seen by gwrap: %v", start)
	}
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 15*time.Second)
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after TERM", code)
	}
}
