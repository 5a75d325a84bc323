package postmortem

import (
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/probes"
)

// beating is a dirty worker that keeps beating (every --dirty-timeout/2) while an action runs
// in its thread at cpu percent: n samples a second apart up to a second before t0.
func beating(n int, cpu float64) []probes.Sample {
	var out []probes.Sample
	for i := 0; i < n; i++ {
		out = append(out, probes.Sample{Time: t0.Add(time.Duration(i-n) * time.Second), CPUUser: cpu, State: "S",
			RSSAnon: 80 << 20, HeartbeatAge: time.Duration(i%3) * time.Second, Heartbeats: true})
	}
	return out
}

func TestClassifyDirty(t *testing.T) {
	settings := gunicorn.Defaults()
	settings.Timeout, settings.DirtyTimeout, settings.DirtyThreads, settings.DirtyWorkers = 4, 6, 1, 2
	settings.DirtyApps = []string{"app.ml:Heavy"}
	apps := []string{"app.ml:Heavy"}
	yes, code, boot := true, 1, 3
	sleepDeep := &probes.Deep{Time: t0, Wchan: "hrtimer_nanosleep"}
	for _, tc := range []struct {
		name     string
		inc      Incident
		timeline []probes.Sample
		deep     *probes.Deep
		cause    Cause
		words    []string // in the summary
		advice   string   // in the advice
	}{
		{name: "a Python loop past the execution timeout, still running",
			inc:      Incident{Kind: KindExecTimeout, PID: 812, At: t0, Role: RoleDirty, DirtyApps: apps, Action: "app.ml:Heavy.predict", ActionRunning: &yes, StackTop: "ml.py:40 in predict"},
			timeline: beating(10, 99), cause: CauseCPUBound,
			words:  []string{"Dirty worker 812 (app.ml:Heavy) ran `app.ml:Heavy.predict` past the 6.0 s --dirty-timeout computing in `ml.py:40 in predict` (99% of a core)", "DirtyTimeoutError", "still running", "only thread"},
			advice: "cannot stop an action"},
		{name: "a sleep past the execution timeout, ended later",
			inc: Incident{Kind: KindExecTimeout, PID: 812, At: t0, Role: RoleDirty, DirtyApps: apps, Action: "app.ml:Heavy.sleep",
				ActionEndedAt: t0.Add(4 * time.Second), ActionSeconds: 10},
			timeline: beating(10, 0), deep: sleepDeep, cause: CauseBlocked,
			words:  []string{"waiting on a timed sleep (kernel wait hrtimer_nanosleep)", "it ran on in its thread for another 4.0 s (10.0 s in all)"},
			advice: "--dirty-timeout (now 6.0 s)"},
		{name: "no stack: whether it still runs is not said",
			inc:      Incident{Kind: KindExecTimeout, PID: 812, At: t0, Role: RoleDirty, Action: "app.ml:Heavy.sleep"},
			timeline: beating(10, 0), cause: CauseBlocked, words: []string{"cannot tell whether it still runs"}},
		{name: "a C loop: DIRTY WORKER TIMEOUT, then the arbiter's SIGKILL",
			inc:      Incident{Kind: KindTimeout, PID: 813, At: t0, Role: RoleDirty, DirtyApps: apps, Timeout: true, Escalated: true, Signal: "SIGKILL", Vanished: true},
			timeline: silence(8, 99, "R", 80<<20), cause: CauseCPUBound,
			words:  []string{"Dirty worker 813 (app.ml:Heavy) ran long computing", "past the 6.0 s --dirty-timeout", "the dirty arbiter SIGKILLed it", "not the OOM killer"},
			advice: "keeps the GIL"},
		{name: "a model too large for the container",
			inc:      Incident{Kind: KindOOMKill, PID: 814, At: t0, Role: RoleDirty, DirtyApps: apps, Signal: "SIGKILL", OOMKillDelta: 1, Vanished: true},
			timeline: silence(3, 50, "R", 300<<20), cause: CauseOOMKilled,
			words:  []string{"Dirty worker 814 (app.ml:Heavy) was killed by the kernel's OOM killer"},
			advice: "--dirty-app module:Class:N"},
		{name: "a dirty worker that cannot boot",
			inc: Incident{Kind: KindBootFailure, PID: 815, At: t0, Role: RoleDirty, DirtyApps: apps, ExitCode: &boot, Repeats: 42,
				Traceback: []string{"Traceback (most recent call last):", "RuntimeError: the model file is missing"}},
			cause:  CauseCrashed,
			words:  []string{"Dirty worker 815 (app.ml:Heavy) failed to boot: RuntimeError: the model file is missing", "again and again", "42 more"},
			advice: "init()"},
		{name: "the dirty arbiter SIGKILLed, its workers orphaned",
			inc:   Incident{Kind: KindDirtyArbiterExit, PID: 811, At: t0, Role: RoleDirtyArbiter, Signal: "SIGKILL", Vanished: true, Orphans: []int{812, 813}},
			cause: CauseCrashed,
			words: []string{"The dirty arbiter 811 was SIGKILLed, not by the OOM killer", "812, 813 are still running, orphaned"}, advice: "restart the container"},
		{name: "the dirty arbiter exited with a code",
			inc:   Incident{Kind: KindDirtyArbiterExit, PID: 811, At: t0, Role: RoleDirtyArbiter, ExitCode: &code, Vanished: true},
			cause: CauseCrashed, words: []string{"The dirty arbiter 811 exited with code 1; Gunicorn's master starts another"}},
		{name: "an HTTP worker timed out waiting on a dirty worker",
			inc: Incident{Kind: KindTimeout, PID: 900, At: t0, Timeout: true, HandledAbort: true, Vanished: true,
				WaitingOnDirty: &DirtyWait{Socket: "/tmp/gunicorn-dirty-x/arbiter.sock", PID: 812, Action: "app.ml:Heavy.predict", Cause: CauseCPUBound, CPUPercent: ptr(98.0), Seconds: 4.2}},
			timeline: silence(5, 0, "S", 40<<20),
			deep:     &probes.Deep{Time: t0, Sockets: []probes.Socket{{Proto: "unix", Remote: "/tmp/gunicorn-dirty-x/arbiter.sock", State: "ESTABLISHED"}}},
			cause:    CauseBlocked,
			words:    []string{"Worker 900 simply ran long waiting on dirty worker 812 (`app.ml:Heavy.predict`, cpu_bound for 4.2 s)"},
			advice:   "get_dirty_client_async"},
		{name: "an HTTP worker waiting while two dirty workers were busy",
			inc: Incident{Kind: KindTimeout, PID: 901, At: t0, Timeout: true, Vanished: true,
				WaitingOnDirty: &DirtyWait{Socket: "/s/arbiter.sock", Candidates: []int{812, 813}, Seconds: 4}},
			timeline: silence(5, 0, "S", 40<<20), cause: CauseBlocked,
			words: []string{"on the dirty arbiter (/s/arbiter.sock): one of the dirty workers 812, 813"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := Evidence{Incident: tc.inc, Settings: settings, Timeline: tc.timeline, Deep: tc.deep, Container: cgroup(12, 200<<20, 1<<30, 0, 0)}
			v := Classify(e, DefaultThresholds())
			if v.Cause != tc.cause {
				t.Errorf("cause %s, want %s: %s", v.Cause, tc.cause, v.Summary)
			}
			for _, w := range tc.words {
				if !strings.Contains(v.Summary, w) {
					t.Errorf("summary lacks %q:\n%s", w, v.Summary)
				}
			}
			if tc.advice != "" && !strings.Contains(strings.Join(v.Advice, " | "), tc.advice) {
				t.Errorf("advice lacks %q: %q", tc.advice, v.Advice)
			}
			if tc.inc.Kind == KindExecTimeout && !v.RanLong {
				t.Error("an action past --dirty-timeout ran long")
			}
			r := NewReport(e, v, "26.2.2", t0)
			if r.Gunicorn.DirtyTimeout != 6 || r.Gunicorn.DirtyWorkers != 2 {
				t.Errorf("gunicorn section %+v", r.Gunicorn)
			}
		})
	}
}
