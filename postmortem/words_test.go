package postmortem

import (
	"strings"
	"testing"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/probes"
)

// timedOut is a worker of the given class timed out after sleeping 10 s of a 10 s timeout.
func timedOut(class string, threads int, f func(*Evidence)) Verdict {
	s := gunicorn.Defaults()
	s.Timeout, s.WorkerClass, s.Threads = 10, class, threads
	e := Evidence{Incident: Incident{Kind: KindTimeout, PID: 91, At: t0, Timeout: true}, Settings: s,
		Timeline: silence(11, 1, "S", 50*mb), Container: cgroup(11, 100*mb, 1000*mb, 0, 0)}
	if f != nil {
		f(&e)
	}
	return Classify(e, DefaultThresholds())
}

func says(v Verdict) string {
	return v.Summary + "\n" + strings.Join(v.Advice, "\n") + fmtFacts(v.Evidence)
}

// TestAdviceFitsTheWorkerClass: "use gthread or gevent" only for a sync worker; for an async
// worker the summary says its loop was blocked.
func TestAdviceFitsTheWorkerClass(t *testing.T) {
	for _, tc := range []struct {
		class   string
		threads int
		async   bool
	}{
		{"sync", 1, false}, {"", 1, false}, {"gunicorn.workers.sync.SyncWorker", 1, false},
		{"sync", 4, true}, // Gunicorn runs a sync class with --threads > 1 as gthread
		{"gthread", 4, true}, {"gevent", 1, true}, {"eventlet", 1, true}, {"tornado", 1, true},
		{"uvicorn.workers.UvicornWorker", 1, true}, {"gunicorn.workers.ggevent.GeventWorker", 1, true},
	} {
		v := timedOut(tc.class, tc.threads, nil)
		switchAdvice := strings.Contains(strings.Join(v.Advice, " "), "use --worker-class gthread")
		loop := strings.Contains(v.Summary, "its main loop was blocked")
		if v.Cause != CauseBlocked || switchAdvice == tc.async || loop != tc.async {
			t.Errorf("%s ×%d: %s, switch advice %v, loop blocked %v\n%s", tc.class, tc.threads, v.Cause, switchAdvice, loop, says(v))
		}
	}
	v := timedOut("gevent", 1, func(e *Evidence) { e.Timeline = silence(11, 95, "R", 50*mb) })
	if v.Cause != CauseCPUBound || !strings.Contains(strings.Join(v.Advice, " "), "with gevent workers a computation blocks") {
		t.Errorf("%s %q", v.Cause, v.Advice)
	}
}

// TestAdviceFitsTheLimitsAndPlatform: CPU-limit advice only under a quota; App Service's 240 s
// only on App Service.
func TestAdviceFitsTheLimitsAndPlatform(t *testing.T) {
	starved := func(e *Evidence) {
		e.Timeline = with(silence(11, 30, "R", 50*mb), func(s *probes.Sample) { s.RunDelayPct = 40 })
	}
	v := timedOut("sync", 1, starved)
	if v.Cause != CauseCPUStarved || strings.Contains(says(v), "raise the container's CPU limit") || !strings.Contains(says(v), "no CPU quota is set") {
		t.Errorf("no quota: %s", says(v))
	}
	v = timedOut("sync", 1, func(e *Evidence) { starved(e); e.Container = cgroup(11, 100*mb, 1000*mb, 3, 0) })
	if v.Cause != CauseCPUStarved || !strings.Contains(says(v), "raise the container's CPU limit (now 0.05 cores)") || !strings.Contains(v.Summary, "0.05-core quota throttled 30 times") {
		t.Errorf("quota: %s", says(v))
	}
	for platform, want := range map[string]bool{"app_service": true, "kubernetes": false, "": false} {
		v := timedOut("sync", 1, func(e *Evidence) { e.Platform = platform })
		if got := strings.Contains(says(v), "240 s"); got != want {
			t.Errorf("platform %q: App Service advice %v", platform, got)
		}
	}
}

// TestSummaryUsesTheStackAndThePeer: the app's frame and the peer in one sentence.
func TestSummaryUsesTheStackAndThePeer(t *testing.T) {
	deep := &probes.Deep{Wchan: "sk_wait_data", Sockets: []probes.Socket{{Proto: "tcp", Local: "10.0.0.2:41000", Remote: "10.0.0.5:5432", State: "ESTABLISHED"}}}
	v := timedOut("sync", 1, func(e *Evidence) {
		e.Deep = deep
		e.Incident.PythonStack = []string{"gunicorn/workers/sync.py:135 in handle", "orders.py:88 in load_report", "psycopg2/extras.py:146 in execute"}
		e.Incident.StackTop = "orders.py:88 in load_report"
	})
	if want := "Worker 91 simply ran long waiting on tcp 10.0.0.5:5432 in `orders.py:88 in load_report` (1% CPU, sleeping 100%), longer than the 10.0 s timeout."; v.Summary != want {
		t.Errorf("summary\n%s\nwant\n%s", v.Summary, want)
	}
	unix := &probes.Deep{Wchan: "unix_stream_read_generic", Sockets: []probes.Socket{{Proto: "unix", Type: "stream", Remote: "/var/run/postgresql/.s.PGSQL.5432", State: "CONNECTED"}}}
	v = timedOut("sync", 1, func(e *Evidence) { e.Deep = unix })
	if !strings.Contains(v.Summary, "waiting on unix /var/run/postgresql/.s.PGSQL.5432") ||
		!strings.Contains(says(v), "the peer /var/run/postgresql/.s.PGSQL.5432 did not answer") ||
		!strings.Contains(says(v), "a unix socket read (kernel wait unix_stream_read_generic)") {
		t.Errorf("%s", says(v))
	}
	// A worker waiting for its child names the child's command; a UDP peer is a peer.
	child := &probes.Deep{Wchan: "do_wait", Syscall: "wait4", Children: []probes.Child{{PID: 7, Command: "sleep 40"}},
		Sockets: []probes.Socket{{Proto: "udp", Local: "127.0.0.1:40000", Remote: "127.0.0.1:42419", State: "ESTABLISHED"}}}
	v = timedOut("sync", 1, func(e *Evidence) { e.Deep = child })
	if !strings.Contains(v.Summary, "waiting on its child process `sleep 40`") ||
		!strings.Contains(says(v), "the child process `sleep 40` ran past the timeout") ||
		!strings.Contains(says(v), "udp 127.0.0.1:42419") {
		t.Errorf("%s", says(v))
	}
	udp := &probes.Deep{Wchan: "__skb_wait_for_more_packets", Sockets: child.Sockets}
	v = timedOut("sync", 1, func(e *Evidence) { e.Deep = udp })
	if !strings.Contains(v.Summary, "waiting on udp 127.0.0.1:42419") || !strings.Contains(says(v), "the peer 127.0.0.1:42419 did not answer") {
		t.Errorf("%s", says(v))
	}
	// Without a stack, the abort traceback's frame.
	v = timedOut("sync", 1, func(e *Evidence) { e.Incident.StuckAt = "app.py:42 in report" })
	if !strings.Contains(v.Summary, "in `app.py:42 in report`") {
		t.Errorf("%s", v.Summary)
	}
}

// TestSaturationWords: all workers busy and a growing queue → the request may have queued.
func TestSaturationWords(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sat   *Saturation
		class string
		queue bool
		more  string
	}{
		{"busy and rising", &Saturation{AllWorkersBusy: true, QueueMax: 37, QueueRose: true, Backlog: 2048}, "sync", true, "use an async worker class"},
		{"busy and rising, async", &Saturation{AllWorkersBusy: true, QueueMax: 37, QueueRose: true}, "gevent", true, "add workers (--workers) or instances"},
		{"busy, queue flat", &Saturation{AllWorkersBusy: true, QueueMax: 3}, "sync", false, ""},
		{"idle workers", &Saturation{QueueMax: 37, QueueRose: true}, "sync", false, ""},
		{"not measured", nil, "sync", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := timedOut(tc.class, 1, func(e *Evidence) { e.Saturation = tc.sat })
			q := strings.Contains(v.Summary, "every worker was busy and the listen queue grew to 37, so requests may have waited in the queue before they started")
			if q != tc.queue || tc.queue && !strings.Contains(strings.Join(v.Advice, " "), tc.more) {
				t.Errorf("%s", says(v))
			}
			if tc.sat != nil && !strings.Contains(fmtFacts(v.Evidence), "listen queue during the silence: up to") {
				t.Errorf("no queue evidence: %s", fmtFacts(v.Evidence))
			}
		})
	}
	v := timedOut("sync", 1, func(e *Evidence) {
		e.Saturation = &Saturation{AllWorkersBusy: true, QueueMax: 37, QueueRose: true, Backlog: 2048}
	})
	if !strings.Contains(fmtFacts(v.Evidence), "up to 37, rising (listen backlog 2048)") {
		t.Errorf("%s", fmtFacts(v.Evidence))
	}
}

// TestKernelWaits: wait channels in words, whatever the kernel's version or suffix.
func TestKernelWaits(t *testing.T) {
	for ch, want := range map[string]string{
		"futex_do_wait": "futex", "futex_wait_queue_me": "futex", "futex_wait_queue": "futex",
		"poll_schedule_timeout.constprop.0": "(poll)", "do_sys_poll": "(poll)", "do_sys_poll.isra.0": "(poll)",
		"hrtimer_nanosleep": "a timed sleep", "do_nanosleep": "a timed sleep", "do_select": "(select)", "core_sys_select.part.0": "(select)",
		"ep_poll": "(epoll)", "do_epoll_wait.part.0": "(epoll)", "unix_stream_read_generic": "a unix socket read",
		"unix_stream_data_wait": "a unix socket read", "sk_wait_data": "a socket read", "wait_woken": "a socket read",
		"inet_csk_accept": "a new connection", "pipe_read": "a pipe read", "pipe_write": "a pipe write",
		"io_schedule": "disk I/O", "folio_wait_bit_common": "disk I/O", "do_wait": "a child process",
		"sk_stream_wait_memory": "the peer is not reading", "jbd2_log_wait_commit": "journal",
		"inet_wait_for_connect.isra.0.cold": "a TCP connect",
	} {
		got := describeWait("wchan " + ch)
		if !strings.Contains(got, want) || !strings.HasSuffix(got, "(kernel wait "+ch+")") {
			t.Errorf("%s: %q, want %q", ch, got, want)
		}
	}
	if got := describeWait("wchan some_new_function"); got != "the kernel (wait channel some_new_function)" {
		t.Errorf("unknown: %q", got)
	}
	if got := describeWait("tcp 10.0.0.5:5432"); got != "tcp 10.0.0.5:5432" {
		t.Errorf("peer: %q", got)
	}
}

// TestBootStuckWords: a boot stuck past the timeout says so without claiming a kill.
func TestBootStuckWords(t *testing.T) {
	s := gunicorn.Defaults()
	s.Timeout = 10
	tl := with(silence(13, 2, "S", 50*mb), func(x *probes.Sample) { x.Heartbeats = false })
	v := Classify(Evidence{Incident: Incident{Kind: KindTimeout, PID: 7, At: t0, BootStuck: true}, Settings: s, Timeline: tl}, DefaultThresholds())
	if v.Cause != CauseBootTimeout || !strings.Contains(v.Summary, "was still booting past the 10.0 s timeout (no heartbeat yet after 12.0 s)") ||
		strings.Contains(says(v), "kill") || strings.Contains(v.Summary, "would have stayed stuck") {
		t.Errorf("%s", says(v))
	}
	v = Classify(Evidence{Incident: Incident{Kind: KindSignal, PID: 7, At: t0, BootStuck: true, Signal: "SIGKILL"}, Settings: s, Timeline: tl}, DefaultThresholds())
	if !strings.HasSuffix(v.Summary, "; it then died of SIGKILL.") {
		t.Errorf("%s", v.Summary)
	}
	// Growth while booting (loading a model) is not a leak worth stating.
	if strings.Contains(v.Summary, "grew") {
		t.Errorf("%s", v.Summary)
	}
}
