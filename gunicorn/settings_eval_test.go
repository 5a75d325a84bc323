package gunicorn

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/asuser"
	"github.com/gwrap/gwrap/internal/testkit"
)

func TestParseStatCPU(t *testing.T) {
	// utime 150, stime 30, cutime 15, cstime 5 ticks; the name holds a space and a parenthesis.
	line := "4242 (py (x) 3) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 30 15 5 20 0 1 0 123 1000 200 18446744073709551615\n"
	if d, ok := parseStatCPU([]byte(line)); !ok || d != 2*time.Second {
		t.Errorf("got %v %v, want 2s", d, ok)
	}
	for _, bad := range []string{"", "4242 (py", "4242 (py) S 1 2 3", "4242 (py) S 1 4242 4242 0 -1 4194560 900 0 0 0 x 30 15 5 20"} {
		if d, ok := parseStatCPU([]byte(bad)); ok {
			t.Errorf("%q: %v, want not ok", bad, d)
		}
	}
}

// evalConf evaluates ./gunicorn.conf.py with Debian's gunicorn under the given bounds.
func evalConf(t *testing.T, conf string, idle, hard time.Duration) (Settings, time.Duration) {
	t.Helper()
	python := testkit.Python(t)
	testkit.Gunicorn(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gunicorn.conf.py"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s := ReadSettings(context.Background(), SettingsInput{Args: []string{"app:app"}, Dir: dir, Python: python, Timeout: idle, MaxTimeout: hard})
	return s, time.Since(start)
}

// TestEvaluateBusyPastTimeout: an interpreter still computing at Timeout (as on a slow machine)
// is given until MaxTimeout, and its settings are used.
func TestEvaluateBusyPastTimeout(t *testing.T) {
	s, took := evalConf(t, "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass\ntimeout = 7 * 11\n", 300*time.Millisecond, 30*time.Second)
	if len(s.Problems) > 0 || s.Timeout != 77 || s.Sources["timeout"] != SourceFile {
		t.Errorf("after %v: %+v", took, s)
	}
}

// TestEvaluateBusyIsCapped: an interpreter that computes forever is stopped at MaxTimeout.
func TestEvaluateBusyIsCapped(t *testing.T) {
	s, took := evalConf(t, "timeout = 45\nwhile True: pass\n", 300*time.Millisecond, 1500*time.Millisecond)
	if len(s.Problems) == 0 || !strings.Contains(s.Problems[0], "still busy") || s.Timeout != 45 || took > 10*time.Second {
		t.Errorf("after %v: %+v", took, s)
	}
}

// TestEvaluateIdleIsStoppedAtTimeout: an interpreter blocked on something uses no CPU and is
// stopped at Timeout, however large MaxTimeout is.
func TestEvaluateIdleIsStoppedAtTimeout(t *testing.T) {
	s, took := evalConf(t, "import time\ntimeout = 45\ntime.sleep(60)\n", time.Second, time.Minute)
	if len(s.Problems) == 0 || !strings.Contains(s.Problems[0], "idle") || s.Timeout != 45 || took > 10*time.Second {
		t.Errorf("after %v: %+v", took, s)
	}
}

// publicDir is a directory nobody can enter (t.TempDir's parent is root's 0700).
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "gwrap-as-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestEvaluateAsTheMaster: with As, the config file runs as that user (it records its uid), and
// is read statically with that user's rights: a file only root may read gives nothing.
func TestEvaluateAsTheMaster(t *testing.T) {
	testkit.RequireRoot(t)
	python := testkit.Python(t)
	testkit.Gunicorn(t)
	dir := publicDir(t)
	conf := "import os\nopen(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'uid'), 'w').write(str(os.getuid()))\ntimeout = 6 * 7\n"
	if err := os.WriteFile(filepath.Join(dir, "gunicorn.conf.py"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	nobody := &asuser.Cred{UID: 65534, GID: 65534}
	s := ReadSettings(context.Background(), SettingsInput{Args: []string{"app:app"}, Dir: dir, Python: python, Timeout: 20 * time.Second, As: nobody})
	if uid, err := os.ReadFile(filepath.Join(dir, "uid")); err != nil || string(uid) != "65534" {
		t.Errorf("the config file ran as uid %q (%v), want 65534", uid, err)
	}
	if s.Timeout != 42 || len(s.Problems) > 0 {
		t.Errorf("settings %+v", s)
	}

	// A config file only root may read, read statically as nobody: unknown, not read.
	secret := filepath.Join(dir, "secret.conf.py")
	if err := os.WriteFile(secret, []byte("timeout = 99\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = ReadSettings(context.Background(), SettingsInput{Args: []string{"-c", secret, "app:app"}, Dir: dir, As: nobody})
	if s.Timeout == 99 || len(s.Problems) == 0 || !strings.Contains(strings.Join(s.Problems, " "), "permission denied") {
		t.Errorf("a root-only config file was read for nobody: timeout %d, problems %q", s.Timeout, s.Problems)
	}
}

// TestCommandLineOnlyOpensNothing: the config file is not opened (a FIFO there would block) and
// what it sets is unknown; the command line still counts.
func TestCommandLineOnlyOpensNothing(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "gunicorn.conf.py")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan Settings, 1)
	go func() {
		done <- ReadSettings(context.Background(), SettingsInput{Args: []string{"-c", fifo, "--timeout", "120", "app:app"}, Dir: dir, Python: "/usr/bin/python3", CommandLineOnly: true})
	}()
	select {
	case s := <-done:
		if s.Timeout != 120 || s.Sources["workers"] != SourceUnknown || len(s.Problems) != 1 {
			t.Errorf("settings %+v", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the config file was opened")
	}
	// The same FIFO read statically without CommandLineOnly: refused, not blocked on.
	go func() {
		done <- ReadSettings(context.Background(), SettingsInput{Args: []string{"-c", fifo, "app:app"}, Dir: dir})
	}()
	select {
	case s := <-done:
		if len(s.Problems) == 0 {
			t.Errorf("a FIFO read as a config file: %+v", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the static read blocked on a FIFO")
	}
}
