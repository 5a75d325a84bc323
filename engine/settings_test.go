package engine

import (
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/probes"
)

// TestSettingsReachTheWatcherAndTheOutputs: the engine alone holds Gunicorn's settings and tells
// the watcher (OnLimits) and the outputs (OnSettings) by one path: at start, when the log names a
// class the start-up read missed ("Using worker: threads", 20.1's gthread), and when the
// master's settings are read late (the class the log named still wins).
func TestSettingsReachTheWatcherAndTheOutputs(t *testing.T) {
	st, _ := testState(gunicorn.Settings{Timeout: 30, WorkerClass: "sync", Threads: 1, LogLevel: "info"})
	var limits []probes.Limits
	var told []gunicorn.Settings
	st.cfg.OnLimits = func(l probes.Limits) { limits = append(limits, l) }
	st.cfg.OnSettings = func(s gunicorn.Settings) { told = append(told, s) }
	last := func() (probes.Limits, gunicorn.Class, int) {
		t.Helper()
		if len(limits) == 0 || len(told) != len(limits) {
			t.Fatalf("told the watcher %d times and the outputs %d times", len(limits), len(told))
		}
		s := told[len(told)-1]
		return limits[len(limits)-1], gunicorn.ClassOf(s), s.Timeout
	}

	st.tell() // as New does
	if l, c, _ := last(); c != "sync" || l.Beat != 15*time.Second {
		t.Errorf("at start: class %s, beat %s", c, l.Beat)
	}
	st.line("stderr", []byte("[2026-11-25 06:00:00 +0000] [100] [INFO] Using worker: threads"), time.Now())
	if l, c, _ := last(); c != "gthread" || l.Beat != time.Second {
		t.Errorf("after the log named the threaded worker: class %s, beat %s", c, l.Beat)
	}
	st.setSettings(gunicorn.Settings{Timeout: 60, WorkerClass: "sync", Threads: 1, LogLevel: "info"})
	if l, c, timeout := last(); c != "gthread" || timeout != 60 || l.Timeout != time.Minute {
		t.Errorf("after the master's settings: class %s, timeout %d s (the watcher's %s)", c, timeout, l.Timeout)
	}
}
