package gunicorn

import (
	"testing"
	"time"
)

// TestEffectiveClass is Gunicorn's own rule (Config.worker_class): "sync" or a class path ending
// in SyncWorker runs the threaded worker with --threads above 1; nothing else is switched, not
// even egg:gunicorn#sync.
func TestEffectiveClass(t *testing.T) {
	for _, c := range []struct {
		class   string
		threads int
		want    Class
	}{
		{"", 1, "sync"},
		{"", 4, "gthread"},
		{"sync", 1, "sync"},
		{"sync", 2, "gthread"},
		{"gunicorn.workers.sync.SyncWorker", 1, "gunicorn.workers.sync.SyncWorker"},
		{"gunicorn.workers.sync.SyncWorker", 4, "gthread"},
		{"SyncWorker", 4, "gthread"}, // a class object set in a config file: its __name__
		{"egg:gunicorn#sync", 4, "egg:gunicorn#sync"},
		{"gevent", 4, "gevent"},
		{"gthread", 1, "gthread"},
	} {
		if got := EffectiveClass(c.class, c.threads); got != c.want {
			t.Errorf("%q with %d threads: %q, want %q", c.class, c.threads, got, c.want)
		}
		if got := ClassOf(Settings{WorkerClass: c.class, Threads: c.threads}); got != c.want {
			t.Errorf("ClassOf %q with %d threads: %q, want %q", c.class, c.threads, got, c.want)
		}
	}
	if LoggedClass("threads") != "gthread" || LoggedClass("gevent") != "gevent" {
		t.Error("LoggedClass")
	}
}

// TestClassHeartbeatAndAsync: an idle sync or Uvicorn worker beats every timeout/2, gthread and
// the event loops every second; a class gwrap does not know is given timeout/2, so an idle
// worker is never called late.
func TestClassHeartbeatAndAsync(t *testing.T) {
	const timeout = 60 * time.Second
	for _, c := range []struct {
		class Class
		beat  time.Duration
		async bool
	}{
		{"sync", 30 * time.Second, false},
		{"gunicorn.workers.sync.SyncWorker", 30 * time.Second, false},
		{"egg:gunicorn#sync", 30 * time.Second, false},
		{"gthread", time.Second, true},
		{"gunicorn.workers.gthread.ThreadWorker", time.Second, true},
		{"gevent", time.Second, true},
		{"gunicorn.workers.ggevent.GeventWorker", time.Second, true},
		{"gevent_pywsgi", time.Second, true},
		{"eventlet", time.Second, true},
		{"tornado", time.Second, true},
		{"asgi", time.Second, true},
		{"aiohttp.GunicornWebWorker", time.Second, true},
		{"uvicorn.workers.UvicornWorker", 30 * time.Second, true},
		{"uvicorn_worker.UvicornWorker", 30 * time.Second, true},
		{"myapp.workers.CustomWorker", 30 * time.Second, false},
	} {
		if got := c.class.Heartbeat(timeout); got != c.beat {
			t.Errorf("%s beats every %v, want %v", c.class, got, c.beat)
		}
		if got := c.class.Async(); got != c.async {
			t.Errorf("%s async %v, want %v", c.class, got, c.async)
		}
	}
}
