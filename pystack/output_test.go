package pystack

import (
	"context"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// gunicornLine is a line of Gunicorn's own error log (time and pid differ from run to run).
var gunicornLine = regexp.MustCompile(`(?m)^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] .*\n`)

// TestLiveAppOutputUnchanged: the app's own stdout and stderr are byte-identical with the hook
// (and a stack taken in the middle of the run) and without it.
func TestLiveAppOutputUnchanged(t *testing.T) {
	g := gunicorns(t)[0]
	run := func(h *Hook) (stdout, stderr string) {
		s := startGunicorn(t, h, g, nil, "-w", "1", "stackapp:app")
		pid := s.workers(t, h, 1)[0]
		talk := func() {
			if err := <-s.get(t, "/talk"); err != nil {
				t.Fatalf("GET /talk: %v", err)
			}
		}
		talk()
		if h != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := h.Take(ctx, pid); err != nil {
				t.Fatalf("Take: %v", err)
			}
		}
		talk()
		_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Fatal("gunicorn did not stop")
		}
		return s.stdout.String(), gunicornLine.ReplaceAllString(s.stderr.String(), "")
	}
	outWith, errWith := run(newHook(t))
	outWithout, errWithout := run(nil)
	if outWith != outWithout || errWith != errWithout {
		t.Errorf("with the hook:\nstdout %q\nstderr %q\nwithout:\nstdout %q\nstderr %q", outWith, errWith, outWithout, errWithout)
	}
	if outWith != "app stdout line\npid-free line from stackapp\napp stdout line\npid-free line from stackapp\n" || errWith != "app stderr line \u00e9\napp stderr line \u00e9\n" {
		t.Errorf("unexpected app output: %q %q", outWith, errWith)
	}
}
