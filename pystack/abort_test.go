package pystack

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// abortedRequest is Gunicorn's line for a request ended by handle_abort: "Error handling request
// /sleep" in 22.0–23.0, "Error handling request GET /sleep" in 26.
var abortedRequest = regexp.MustCompile(`Error handling request (GET )?/sleep`)

// TestLiveTimeoutAbortUnchanged: the hook enables faulthandler's crash dump, which covers SIGABRT,
// and Gunicorn times a worker out with SIGABRT. Gunicorn's workers reset SIGABRT to their own
// handler (handle_abort), so a timed-out worker ends as it would without the hook: no crash dump,
// and from 22.0 Gunicorn's own "Error handling request" traceback in its log.
func TestLiveTimeoutAbortUnchanged(t *testing.T) {
	for _, g := range gunicorns(t) {
		t.Run(g.name, func(t *testing.T) {
			h := newHook(t)
			s := startGunicorn(t, h, g, nil, "-w", "1", "--timeout", "2", "stackapp:app")
			pid := s.workers(t, h, 1)[0]
			s.get(t, "/sleep")
			s.waitReady(t, "sleep")
			deadline := time.Now().Add(20 * time.Second)
			for syscallKill0(pid) == nil {
				if time.Now().After(deadline) {
					t.Fatalf("worker %d not timed out after 20s", pid)
				}
				time.Sleep(50 * time.Millisecond) // polling with a deadline
			}
			if _, crashed := h.Crash(pid); crashed {
				b, _ := os.ReadFile(h.stackFile(pid))
				t.Errorf("the timed-out worker left a crash dump:\n%s", b)
			}
			log := s.stderr.String()
			if !strings.Contains(log, "WORKER TIMEOUT (pid:") {
				t.Errorf("no WORKER TIMEOUT in\n%s", log)
			}
			if g.name != "20.1" && !abortedRequest.MatchString(log) {
				t.Errorf("Gunicorn %s's own traceback of the aborted request is missing:\n%s", g.name, log)
			}
			if strings.Contains(log, "Fatal Python error") {
				t.Errorf("a faulthandler dump reached the log:\n%s", log)
			}
		})
	}
}
