package gunicorn

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
