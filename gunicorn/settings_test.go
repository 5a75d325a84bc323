package gunicorn

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

func TestParseArgsSpellings(t *testing.T) {
	for _, args := range [][]string{
		{"app:app", "--timeout", "600"},
		{"--timeout=600", "app:app"},
		{"-t", "600", "app:app"},
		{"-t600", "app:app"},
		{"--workers", "3", "-t", "600", "--preload", "app:app", "--bind", ":1", "-b", "unix:/s"},
	} {
		p := parseArgs(args)
		if p.values["timeout"] != "600" || p.app != "app:app" {
			t.Errorf("%q: timeout %v app %q", args, p.values["timeout"], p.app)
		}
	}
	p := parseArgs([]string{"--workers", "3", "--preload", "app:app", "--bind", ":1", "-b", "unix:/s", "--log-syslog", "--unknown", "x"})
	if p.values["preload_app"] != true || p.values["syslog"] != true || !reflect.DeepEqual(p.values["bind"], []string{":1", "unix:/s"}) {
		t.Errorf("%v", p.values)
	}
}

func TestSplitArgs(t *testing.T) {
	got := splitArgs(`--timeout 600 --access-logfile '-' --error-logfile "-" -c /opt/startup/gunicorn.conf.py --chdir=/home/site/wwwroot a\ b`)
	want := []string{"--timeout", "600", "--access-logfile", "-", "--error-logfile", "-", "-c", "/opt/startup/gunicorn.conf.py", "--chdir=/home/site/wwwroot", "a b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q", got)
	}
}

func TestParseConfigStatic(t *testing.T) {
	vals, unknown := parseConfigStatic([]byte(`
import os
timeout = 120  # seconds
workers = 3
bind = "0.0.0.0:80"
preload_app = True
worker_class = 'gthread'
max_requests = int(os.environ.get("MAX", "100"))
graceful_timeout = 60 * 10
threads = os.cpu_count()
threads = 4
my_helper = compute()
def post_fork(server, worker):
    timeout = 5
`))
	want := map[string]any{"timeout": 120, "workers": 3, "bind": []string{"0.0.0.0:80"}, "preload_app": true, "worker_class": "gthread", "threads": 4}
	if !reflect.DeepEqual(vals, want) {
		t.Errorf("got %v", vals)
	}
	if !reflect.DeepEqual(unknown, []string{"graceful_timeout", "max_requests"}) {
		t.Errorf("computed settings %v, want graceful_timeout and max_requests", unknown)
	}
}

// TestPrecedenceStatic is the precedence Gunicorn shows (command line, then GUNICORN_CMD_ARGS,
// then the config file; TestEvaluateWithDebianGunicorn evaluates it), read without Python.
func TestPrecedenceStatic(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gunicorn.conf.py")
	if err := os.WriteFile(cfg, []byte("timeout = 120\nworkers = 3\ngraceful_timeout = 7\nkeepalive = 9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := ReadSettings(context.Background(), SettingsInput{
		Args: []string{"app:app", "--timeout", "600", "--access-logfile", "-", "--error-logfile", "-", "-c", cfg},
		Env:  []string{"GUNICORN_CMD_ARGS=--timeout 200 --workers 5 --keep-alive 11"},
		Dir:  dir,
	})
	if s.Timeout != 600 || s.Workers != 5 || s.GracefulTimeout != 7 || s.AccessLog != "-" || s.ErrorLog != "-" {
		t.Errorf("%+v", s)
	}
	if s.Sources["timeout"] != SourceCLI || s.Sources["workers"] != SourceEnv || s.Sources["graceful_timeout"] != SourceFile {
		t.Errorf("sources %v", s.Sources)
	}
}

func TestDefaultConfigFileAndPythonModule(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gunicorn.conf.py"), []byte("workers = 4\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := ReadSettings(context.Background(), SettingsInput{Args: []string{"app:app"}, Dir: dir})
	if s.Workers != 4 || s.ConfigFile != "gunicorn.conf.py" {
		t.Errorf("./gunicorn.conf.py not read: %+v", s)
	}
	s = ReadSettings(context.Background(), SettingsInput{Args: []string{"-c", "python:myconf", "app:app", "-w", "2"}, Dir: dir})
	if len(s.Problems) == 0 || s.Sources["timeout"] != SourceUnknown || s.Sources["workers"] != SourceCLI {
		t.Errorf("a python: config read statically must be reported unknown: %+v", s)
	}
	// A computed value read statically is unknown, unless the command line sets it.
	if err := os.WriteFile(filepath.Join(dir, "gunicorn.conf.py"), []byte("timeout = 60 * 10\nworkers = 2 * 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = ReadSettings(context.Background(), SettingsInput{Args: []string{"app:app", "-w3"}, Dir: dir})
	if s.Sources["timeout"] != SourceUnknown || s.Timeout != 30 || s.Workers != 3 || s.Sources["workers"] != SourceCLI || len(s.Problems) != 1 {
		t.Errorf("computed timeout: %+v", s)
	}
}

// TestEvaluateWithDebianGunicorn evaluates a real config file with computed values the way
// Gunicorn does, with GUNICORN_CMD_ARGS and the command line on top.
func TestEvaluateWithDebianGunicorn(t *testing.T) {
	python := testkit.Python(t)
	testkit.Gunicorn(t)
	dir := t.TempDir()
	conf := "import os\ntimeout = 60 * 10\nworkers = int(os.environ.get('NWORKERS', '2')) + 1\nworker_class = 'gthread'\nthreads = 4\nlogconfig_dict = {'version': 1}\n"
	if err := os.WriteFile(filepath.Join(dir, "gunicorn.conf.py"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s := ReadSettings(context.Background(), SettingsInput{
		Args: []string{"app:app", "--graceful-timeout", "9"}, Env: []string{"NWORKERS=5", "GUNICORN_CMD_ARGS=--max-requests 1000"},
		Dir: dir, Python: python, Timeout: 10 * time.Second,
	})
	if len(s.Problems) > 0 {
		t.Fatalf("problems: %v", s.Problems)
	}
	if s.Timeout != 600 || s.Workers != 6 || s.WorkerClass != "gthread" || s.Threads != 4 || s.GracefulTimeout != 9 || s.MaxRequests != 1000 || s.LogConfig != "logconfig_dict" {
		t.Errorf("%+v", s)
	}
	if s.Sources["timeout"] != SourceFile || s.Sources["graceful_timeout"] != SourceCLI || s.Sources["max_requests"] != SourceEnv ||
		s.Sources["workers"] != SourceFile || s.Sources["loglevel"] != "" || s.Sources["errorlog"] != "" {
		t.Errorf("sources %v", s.Sources)
	}

	// The precedence case, evaluated by Gunicorn itself: timeout 600 (command
	// line), workers 5 (GUNICORN_CMD_ARGS), graceful_timeout 7 (file); -c comes last.
	if err := os.WriteFile(filepath.Join(dir, "startup.conf.py"), []byte("timeout=120\nworkers=3\ngraceful_timeout=7\nkeepalive=9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = ReadSettings(context.Background(), SettingsInput{
		Args: []string{"app:app", "--timeout", "600", "--access-logfile", "-", "--error-logfile", "-", "-c", filepath.Join(dir, "startup.conf.py")},
		Env:  []string{"GUNICORN_CMD_ARGS=--timeout 200 --workers 5 --keep-alive 11 --threads 3"},
		Dir:  dir, Python: python, Timeout: 10 * time.Second,
	})
	if len(s.Problems) > 0 || s.Timeout != 600 || s.Workers != 5 || s.GracefulTimeout != 7 || s.AccessLog != "-" || s.ErrorLog != "-" {
		t.Errorf("precedence: %+v", s)
	}
	if s.Sources["timeout"] != SourceCLI || s.Sources["workers"] != SourceEnv || s.Sources["graceful_timeout"] != SourceFile {
		t.Errorf("precedence: sources %v", s.Sources)
	}
	// The python:module form, evaluated.
	if err := os.WriteFile(filepath.Join(dir, "myconf.py"), []byte("timeout = 5 * 11\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s2 := ReadSettings(context.Background(), SettingsInput{Args: []string{"-c", "python:myconf", "app:app"}, Dir: dir, Python: python, Timeout: 10 * time.Second})
	if len(s2.Problems) > 0 || s2.Timeout != 55 || s2.Sources["timeout"] != SourceFile {
		t.Errorf("python:myconf: %+v", s2)
	}
	// sync with threads is reported as given ("sync"), not as 20.1's "threads" display name.
	if s.WorkerClass != "sync" || s.Threads != 3 {
		t.Errorf("worker class %q threads %d", s.WorkerClass, s.Threads)
	}

	// A config file that raises: Gunicorn would fail too; gwrap says so and reads statically.
	if err := os.WriteFile(filepath.Join(dir, "gunicorn.conf.py"), []byte("timeout = 45\nraise SystemExit(3)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = ReadSettings(context.Background(), SettingsInput{Args: []string{"app:app"}, Dir: dir, Python: python, Timeout: 10 * time.Second})
	if len(s.Problems) == 0 || s.Timeout != 45 {
		t.Errorf("fallback: %+v", s)
	}
	// A config file that hangs: the evaluation is bounded in time.
	if err := os.WriteFile(filepath.Join(dir, "gunicorn.conf.py"), []byte("import time\ntime.sleep(60)\ntimeout = 45\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s = ReadSettings(context.Background(), SettingsInput{Args: []string{"app:app"}, Dir: dir, Python: python, Timeout: time.Second})
	if len(s.Problems) == 0 || !strings.Contains(s.Problems[0], "timed out") || s.Timeout != 45 || time.Since(start) > 10*time.Second {
		t.Errorf("hanging config: %v %+v", time.Since(start), s)
	}
}

func TestFindPython(t *testing.T) {
	if got := shebangPython("#!/usr/bin/python3\n"); got != "/usr/bin/python3" {
		t.Errorf("got %q", got)
	}
	if got := shebangPython("#!/bin/sh\n"); got != "" {
		t.Errorf("got %q", got)
	}
	if args, ok := CommandArgs([]string{"/usr/bin/python3", "-m", "gunicorn", "app:app"}); !ok || args[0] != "app:app" {
		t.Errorf("python -m gunicorn: %v %v", args, ok)
	}
	if args, ok := CommandArgs([]string{"/usr/bin/python3", "/usr/bin/gunicorn", "app:app"}); !ok || args[0] != "app:app" {
		t.Errorf("the master's own argv in /proc: %v %v", args, ok)
	}
	if _, ok := CommandArgs([]string{"python3", "migrate.py"}); ok {
		t.Error("a python script that is not gunicorn")
	}
	if _, ok := CommandArgs([]string{"uwsgi"}); ok {
		t.Error("uwsgi is not gunicorn")
	}
}

// TestCommandArgs: every launcher whose argv is Gunicorn's command line gives its arguments.
func TestCommandArgs(t *testing.T) {
	run := "from gunicorn.app.wsgiapp import run; run()"
	for _, c := range []struct {
		argv []string
		want string // "-": not Gunicorn's command line
	}{
		{[]string{"gunicorn", "app:app", "-t", "9"}, "[app:app -t 9]"},
		{[]string{"/usr/bin/python3", "-m", "gunicorn", "app:app"}, "[app:app]"},
		{[]string{"python3", "-mgunicorn", "app:app"}, "[app:app]"},
		{[]string{"python3", "-u", "-X", "dev", "-m", "gunicorn.app.wsgiapp", "app:app"}, "[app:app]"},
		{[]string{"python3", "-c", run, "--timeout", "4", "app:app"}, "[--timeout 4 app:app]"},
		{[]string{"python3.11", "-B", "-c" + run, "app:app"}, "[app:app]"},
		{[]string{"/usr/bin/python3", "/usr/bin/gunicorn", "app:app"}, "[app:app]"},
		{[]string{"python3", "server.py", "--timeout", "4"}, "-"}, // a custom application: its own argv
		{[]string{"python3", "-c", "import server; server.main()", "--timeout", "4"}, "-"},
		{[]string{"python3", "-m", "uvicorn", "app:app"}, "-"},
		{[]string{"python3", "-c"}, "-"},
		{[]string{"sh", "-c", "exec gunicorn app:app"}, "-"},
	} {
		args, ok := CommandArgs(c.argv)
		got := "-"
		if ok {
			got = fmt.Sprint(args)
		}
		if got != c.want {
			t.Errorf("CommandArgs(%q) = %s, want %s", c.argv, got, c.want)
		}
	}
}

func TestLint(t *testing.T) {
	codes := func(ws []Warning) map[string]bool {
		m := map[string]bool{}
		for _, w := range ws {
			m[w.Code] = true
			if w.Fix == "" || w.Message == "" {
				t.Errorf("warning without fix: %+v", w)
			}
		}
		return m
	}
	base := Defaults()
	got := codes(Lint(LintInput{Settings: base, StopBudget: 8 * time.Second}))
	if !got["timeout_default"] || !got["graceful_timeout_above_budget"] {
		t.Errorf("defaults: %v", got)
	}
	s := Defaults()
	s.Timeout, s.Sources["timeout"] = 120, SourceCLI
	s.GracefulTimeout = 5
	got = codes(Lint(LintInput{Settings: s, Env: []string{"WEBSITE_SITE_NAME=myapp"}, StopBudget: 8 * time.Second}))
	if !got["timeout_below_platform"] || len(got) != 1 {
		t.Errorf("app service 120s: %v", got)
	}
	s.Timeout = 600
	s.ErrorLog, s.LogConfig, s.Workers = "/var/log/g.log", "logconfig", 9
	got = codes(Lint(LintInput{Settings: s, CPUQuotaCores: 1, HostCores: 16, StopBudget: 8 * time.Second}))
	if !got["errorlog_not_visible"] || !got["logconfig"] || !got["workers_above_quota"] || got["timeout_default"] {
		t.Errorf("blind, quota: %v", got)
	}
	for _, w := range Lint(LintInput{Settings: s}) {
		if w.Code == "errorlog_not_visible" && !strings.HasPrefix(w.Message, "GWRAP IS BLIND") {
			t.Errorf("a file error log must be said loudly: %q", w.Message)
		}
	}

	// A log level the config file computes: gwrap cannot tell whether a normal exit shows.
	s = Defaults()
	s.Timeout, s.Sources["timeout"], s.Sources["loglevel"] = 600, SourceCLI, SourceUnknown
	if got := codes(BlindSpots(s)); !got["loglevel_unknown"] || len(got) != 1 {
		t.Errorf("loglevel unknown: %v", got)
	}

	// --log-syslog adds a handler and leaves stderr as it is: not a blind spot.
	s = Defaults()
	s.Timeout, s.Sources["timeout"], s.Syslog = 600, SourceFile, true
	if ws := Lint(LintInput{Settings: s}); len(ws) != 0 {
		t.Errorf("syslog, timeout 600: %+v", ws)
	}
	// A timeout the config file computes and gwrap could not evaluate is said, not guessed.
	s.Sources["timeout"] = SourceUnknown
	got = codes(Lint(LintInput{Settings: s, Env: []string{"WEBSITE_HOSTNAME=a.azurewebsites.net"}}))
	if !got["timeout_unknown"] || len(got) != 1 {
		t.Errorf("unknown timeout: %v", got)
	}
	// gthread: workers within the quota, threads far above it.
	s = Defaults()
	s.Timeout, s.Sources["timeout"], s.Workers, s.Threads = 60, SourceCLI, 3, 32
	got = codes(Lint(LintInput{Settings: s, CPUQuotaCores: 1, HostCores: 64}))
	if !got["threads_above_quota"] || len(got) != 1 {
		t.Errorf("threads: %v", got)
	}
	if p := Platform([]string{"WEBSITE_INSTANCE_ID=abc"}); p != "app_service" {
		t.Errorf("platform %q", p)
	}
	if p := Platform([]string{"HOME=/root"}); p != "" {
		t.Errorf("platform %q", p)
	}
}

// TestDirtySettings reads Gunicorn 25+'s dirty-worker settings from every source: the command line
// (--dirty-app appends), GUNICORN_CMD_ARGS, a config file read statically, and Gunicorn 26's own
// Config evaluating a config file that computes them.
func TestDirtySettings(t *testing.T) {
	s := ReadSettings(context.Background(), SettingsInput{Args: []string{"app:app"}})
	if s.DirtyWorkers != 0 || s.DirtyTimeout != 300 || s.DirtyThreads != 1 || len(s.DirtyApps) != 0 {
		t.Errorf("defaults: %+v", s)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gunicorn.conf.py"), []byte("dirty_apps = ['ml:Heavy', 'img:Thumb:1']\ndirty_timeout = 60\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = ReadSettings(context.Background(), SettingsInput{Args: []string{"app:app", "--dirty-workers", "2", "--dirty-threads=3"},
		Env: []string{"GUNICORN_CMD_ARGS=--dirty-timeout 90"}, Dir: dir})
	if s.DirtyWorkers != 2 || s.DirtyThreads != 3 || s.DirtyTimeout != 90 || strings.Join(s.DirtyApps, ",") != "ml:Heavy,img:Thumb:1" {
		t.Errorf("static: %+v", s)
	}
	if s.Sources["dirty_timeout"] != SourceEnv || s.Sources["dirty_apps"] != SourceFile || s.Sources["dirty_workers"] != SourceCLI {
		t.Errorf("sources %v", s.Sources)
	}
	s = ReadSettings(context.Background(), SettingsInput{Args: []string{"app:app", "--dirty-app", "a:A", "--dirty-app=b:B"}, Dir: t.TempDir()})
	if strings.Join(s.DirtyApps, ",") != "a:A,b:B" {
		t.Errorf("--dirty-app appends: %q", s.DirtyApps)
	}

	var rel testkit.Release
	for _, r := range testkit.Releases(t) {
		if r.Major() >= 25 {
			rel = r
		}
	}
	if rel.Version == "" {
		testkit.Unavailable(t, "no Gunicorn 25+ unpacked (run scripts/deps.sh)")
	}
	if err := os.WriteFile(filepath.Join(dir, "gunicorn.conf.py"), []byte("dirty_apps = ['ml:Heavy']\ndirty_timeout = 6 * 10\ndirty_workers = 1 + 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = ReadSettings(context.Background(), SettingsInput{Args: []string{"app:app", "--dirty-threads", "4"}, Env: rel.Env(t),
		Dir: dir, Python: testkit.Python(t), Timeout: 10 * time.Second})
	if len(s.Problems) > 0 || s.DirtyTimeout != 60 || s.DirtyWorkers != 2 || s.DirtyThreads != 4 || strings.Join(s.DirtyApps, ",") != "ml:Heavy" {
		t.Errorf("Gunicorn %s evaluated: %+v", rel.Version, s)
	}
}
