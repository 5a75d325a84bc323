package gunicorn

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// The dirty lines as Gunicorn 26.2.2 wrote them (captured here, see testdata/logs/gunicorn-26.2.2-dirty.log).
func TestParseDirtyLines(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       Event
		check      func(t *testing.T, e Event)
	}{
		{name: "arbiter spawned", line: pfx + "[INFO] Spawned dirty arbiter (pid: 31849) at /tmp/gunicorn-dirty-i7mofvuo/arbiter.sock",
			want: Event{Kind: KindDirtyArbiterSpawned, WorkerPID: 31849},
			check: func(t *testing.T, e Event) {
				if e.Socket != "/tmp/gunicorn-dirty-i7mofvuo/arbiter.sock" {
					t.Errorf("socket %q", e.Socket)
				}
			}},
		{name: "arbiter starting", line: pfx + "[INFO] Dirty arbiter starting (pid: 31849)", want: Event{Kind: KindDirtyArbiterStarting, WorkerPID: 31849}},
		{name: "worker spawned", line: pfx + "[INFO] Spawned dirty worker (pid: 31851) with apps: ['dirty:Heavy', \"app.ml:Model\"]",
			want: Event{Kind: KindDirtySpawned, WorkerPID: 31851},
			check: func(t *testing.T, e Event) {
				if strings.Join(e.Apps, ",") != "dirty:Heavy,app.ml:Model" {
					t.Errorf("apps %q", e.Apps)
				}
			}},
		{name: "no apps", line: pfx + "[INFO] Spawned dirty worker (pid: 5) with apps: []", want: Event{Kind: KindDirtySpawned, WorkerPID: 5},
			check: func(t *testing.T, e Event) {
				if len(e.Apps) != 0 {
					t.Errorf("apps %q", e.Apps)
				}
			}},
		// Not a WORKER TIMEOUT of an HTTP worker, though it holds one's text.
		{name: "dirty worker timeout", line: pfx + "[CRITICAL] DIRTY WORKER TIMEOUT (pid:31851)", want: Event{Kind: KindDirtyTimeout, WorkerPID: 31851}},
		{name: "killed by signal", line: pfx + "[WARNING] Dirty worker (pid:31851) killed by signal 9",
			want: Event{Kind: KindDirtySignaled, WorkerPID: 31851, Signal: 9, SignalName: "SIGKILL"}},
		{name: "failed to boot", line: pfx + "[ERROR] Dirty worker failed to boot (pid:3208)", want: Event{Kind: KindDirtyBootFailed, WorkerPID: 3208}},
		{name: "exited", line: pfx + "[INFO] Dirty worker exited (pid:3208)", want: Event{Kind: KindDirtyExited, WorkerPID: 3208}},
		{name: "arbiter exited 0", line: pfx + "[INFO] Dirty arbiter (pid:31849) exited", want: Event{Kind: KindDirtyArbiterExited, WorkerPID: 31849}},
		{name: "arbiter exit code", line: pfx + "[ERROR] Dirty arbiter (pid:31849) exited with code 255",
			want: Event{Kind: KindDirtyArbiterExited, WorkerPID: 31849, ExitCode: 255}},
		{name: "arbiter signal", line: pfx + "[WARNING] Dirty arbiter (pid:31849) killed by signal 9",
			want: Event{Kind: KindDirtyArbiterExited, WorkerPID: 31849, Signal: 9, SignalName: "SIGKILL"}},
		{name: "orphan", line: pfx + "[WARNING] Killing orphaned dirty arbiter (pid: 77)", want: Event{Kind: KindDirtyArbiterOrphan, WorkerPID: 77}},
		{name: "execution timeout", line: pfx + "[WARNING] Execution timeout for app.ml:Heavy.predict after 300s",
			want: Event{Kind: KindDirtyExecTimeout},
			check: func(t *testing.T, e Event) {
				if e.App != "app.ml:Heavy" || e.Action != "predict" || e.Seconds != 300 {
					t.Errorf("app %q action %q seconds %d", e.App, e.Action, e.Seconds)
				}
			}},
		{name: "boot exception", line: pfx + "[ERROR] Exception in dirty worker process", want: Event{Kind: KindDirtyWorkerError}},
		// Lines the parser must leave alone.
		{name: "listening", line: pfx + "[INFO] Dirty worker 31851 listening on /tmp/gunicorn-dirty-x/worker-1.sock", want: Event{Kind: KindRaw}},
		{name: "exiting", line: pfx + "[INFO] Dirty arbiter exiting (pid: 31849)", want: Event{Kind: KindRaw}},
		{name: "execution timeout without action", line: pfx + "[WARNING] Execution timeout for app.ml:Heavy after 3s", want: Event{Kind: KindRaw}},
		{name: "arbiter other", line: pfx + "[INFO] Dirty arbiter (pid:5) waved", want: Event{Kind: KindRaw}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseLine([]byte(tc.line))
			if got.PID != 3679 {
				t.Errorf("prefix not parsed: %+v", got)
			}
			if !equal(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
			if got.IsDirty() != (tc.want.Kind != KindRaw) {
				t.Errorf("IsDirty %v", got.IsDirty())
			}
		})
	}
}

func TestAssemblerDirtyBootTraceback(t *testing.T) {
	a := NewAssembler(50, 4096)
	var done []Event
	for _, l := range []string{
		"[2026-12-03 04:42:08 +0000] [3208] [ERROR] Exception in dirty worker process",
		"Traceback (most recent call last):",
		`  File "/srv/app/dirty.py", line 22, in init`,
		"RuntimeError: the model file is missing",
		"[2026-12-03 04:42:08 +0000] [3206] [ERROR] Dirty worker failed to boot (pid:3208)",
	} {
		_, d := a.Add([]byte(l))
		done = append(done, d...)
	}
	if len(done) != 2 || done[0].Kind != KindDirtyWorkerError || len(done[0].Traceback) != 3 || done[1].Kind != KindDirtyBootFailed {
		t.Fatalf("done %+v", done)
	}
}

// TestExplainDirtyCaptured: explain tells, from a real 26.2.2 log alone, the dirty boot loop (one
// incident, its repeats, the worker's traceback), the HTTP worker's timeout, the two execution
// timeouts with their actions, the dirty worker timeout and the arbiter's SIGKILL after it, and a
// SIGKILL with no timeout (the OOM kill); the arbiter's exit at the stop is no incident.
func TestExplainDirtyCaptured(t *testing.T) {
	f, err := os.Open("testdata/logs/gunicorn-26.2.2-dirty-captured.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ex, err := Explain(f)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, inc := range ex.Incidents {
		s := fmt.Sprintf("%d %s %s", inc.PID, inc.Role, inc.Kind)
		switch {
		case inc.Action != "":
			s += " " + inc.Action
		case inc.TimeoutEscalation:
			s += " escalation"
		case inc.PossibleOOM:
			s += " possible_oom"
		case inc.Repeats > 0:
			s += fmt.Sprintf(" repeats %d, %d traceback lines", inc.Repeats, len(inc.Traceback))
		}
		got = append(got, s)
	}
	want := []string{"831 dirty boot_failure repeats 7, 10 traceback lines", "830  timeout", "840 dirty execution_timeout dirty:Heavy.spin",
		"840 dirty execution_timeout dirty:Heavy.sleep", "840 dirty timeout escalation", "886 dirty signal possible_oom"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("incidents:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
