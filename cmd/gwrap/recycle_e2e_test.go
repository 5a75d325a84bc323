package main

import (
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

// quietLogger is a custom logger class that sends Gunicorn's error log to a file only.
const quietLogger = `import logging, os
from gunicorn import glogging

class Logger(glogging.Logger):
    def setup(self, cfg):
        super().setup(cfg)
        for h in list(self.error_log.handlers):
            self.error_log.removeHandler(h)
        self.error_log.addHandler(logging.FileHandler(os.environ["QUIET_LOG"]))
`

// TestRecyclesWithoutLines: max-requests recycling makes no report, whatever part of Gunicorn's
// log gwrap can see — its error log in a file (with or without --capture-output), also sent to
// syslog, moved by a custom logger class, or at a log level gwrap could not read — and gwrap says
// at start what it cannot see. A worker stuck past the timeout afterwards is still reported as a
// timeout: from its lines where they come, from its stale heartbeat where they do not.
func TestRecyclesWithoutLines(t *testing.T) {
	testkit.RequireRoot(t)
	for _, c := range []struct {
		name     string
		args     func(dir string) []string
		gwrap    []string
		warning  string // the config.warning code said at start ("" none)
		inferred bool   // the timeout is told from the heartbeat (no WORKER TIMEOUT line reaches gwrap)
	}{
		{"--error-logfile FILE", func(dir string) []string { return []string{"--error-logfile", filepath.Join(dir, "error.log")} },
			nil, "errorlog_not_visible", true},
		{"--capture-output to a file", func(dir string) []string {
			return []string{"--capture-output", "--error-logfile", filepath.Join(dir, "error.log")}
		}, nil, "errorlog_not_visible", true},
		{"--log-syslog", func(string) []string { return []string{"--log-syslog"} }, nil, "", false},
		{"a custom logger class", func(string) []string { return []string{"--logger-class", "quietlog.Logger"} },
			nil, "logger_class", true},
		{"a log level gwrap could not read", func(dir string) []string { return []string{"-c", filepath.Join(dir, "conf.py")} },
			[]string{"--eval-config=false"}, "loglevel_unknown", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{"quietlog.py": quietLogger, "conf.py": "loglevel = \"warn\" + \"ing\"\n"}
			for name, src := range files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			port := freePort(t)
			g := append([]string{testkit.Gunicorn(t), "--chdir", testkit.AppsDir(), "wsgi:app", "--bind", fmt.Sprintf("127.0.0.1:%d", port),
				"--timeout", "3", "--graceful-timeout", "1", "--workers", "2", "--max-requests", "1"}, c.args(dir)...)
			// Sweeps ten times a second, so that gwrap sees most short-lived workers come and go.
			argv := append(append(append([]string{gwrapBin, "--report-dir", t.TempDir(), "--interval", "100ms", "--fast-interval", "50ms"}, c.gwrap...), "--"), g...)
			env := []string{"PYTHONPATH=" + dir + string(os.PathListSeparator) + testkit.AppsDir(), "QUIET_LOG=" + filepath.Join(dir, "quiet.log")}
			p := startCmd(t, exec.Command(argv[0], argv[1:]...), env)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("gwrap's output:\n%s", strings.Join(p.stdout.snapshot(), "\n"))
				}
			})
			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			waitHTTP(t, base+"/", 30*time.Second)
			// 40 recycles of workers that each serve one 0.2 s request: long enough for gwrap's
			// sweeps to see most of them come and go.
			if failed := hammer(t, base+"/sleep?0.2", 40, 4); failed > 2 {
				t.Errorf("%d of 40 requests failed", failed)
			}
			// A stuck request: its report comes seconds after every recycle's window closed.
			go get(base+"/sleep?30", 20*time.Second)
			pm := p.stdout.waitEvent(t, 30*time.Second, "a postmortem event", isEvent("postmortem"))
			p.signal(t, syscall.SIGTERM)
			p.wait(t, 20*time.Second)
			var pms, recycled int
			warned := c.warning == ""
			for _, e := range p.stdout.events(t) {
				switch {
				case e["event"] == "postmortem":
					pms++
				case e["event"] == "worker.gone":
					recycled++
				case e["event"] == "config.warning" && e["code"] == c.warning:
					warned = true
				}
			}
			t.Logf("%d workers gone, %d postmortems", recycled, pms)
			if pms != 1 || pm["kind"] != "timeout" || pm["cause"] != "blocked" {
				t.Errorf("%d postmortems, the first %v/%v (%v): want only the stuck worker's timeout", pms, pm["kind"], pm["cause"], pm["summary"])
			}
			if recycled < 20 {
				t.Errorf("only %d recycled workers seen: the case did not happen", recycled)
			}
			if !warned {
				t.Errorf("no %s warning at start", c.warning)
			}
			if c.inferred {
				rep := readReport(t, pm)
				inc, _ := rep["incident"].(map[string]any)
				if inc["timeout_inferred"] != true || inc["timeout_logged"] != false {
					t.Errorf("incident %v: want the timeout told from the heartbeat", inc)
				}
			}
		})
	}
}
