// Package testkit holds what gwrap's tests share: the rule that tests needing root, a kernel
// feature or Debian's gunicorn skip on machines without them but fail in CI (GWRAP_STRICT=1,
// set by .ci/run), and lookups of the real programs the tests run.
package testkit

import (
	"bytes"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// Strict reports whether missing prerequisites must fail tests instead of skipping them.
func Strict() bool { return os.Getenv("GWRAP_STRICT") == "1" }

// Unavailable skips the test, or fails it under GWRAP_STRICT=1, because what it needs is missing.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if Strict() {
		t.Fatalf("prerequisite missing under GWRAP_STRICT=1: "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequireRoot stops the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root")
	}
}

// Gunicorn returns the path of Debian's gunicorn (the one tests run), or stops the test.
func Gunicorn(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/gunicorn", "/usr/bin/gunicorn3"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("gunicorn"); err == nil {
		return p
	}
	Unavailable(t, "gunicorn is not installed (apt-get install gunicorn)")
	return ""
}

// Python returns Debian's python3 (the interpreter gunicorn runs under), or stops the test.
func Python(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	Unavailable(t, "/usr/bin/python3 is not installed")
	return ""
}

// Buffer is a mutex-guarded bytes.Buffer for output a child process writes while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is what was written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
