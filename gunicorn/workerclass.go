package gunicorn

import (
	"strings"
	"time"
)

// Class is a worker class as Gunicorn runs it, named as its "Using worker:" line names it from
// 21.0: "sync", "gthread", "gevent", "uvicorn.workers.UvicornWorker"… What gwrap needs of a class
// (how often an idle worker beats, whether a long request alone times it out) is decided here and
// nowhere else.
type Class string

// ClassOf is the class Gunicorn runs for these settings: Gunicorn's own rule (Config.worker_class,
// 19.9 to 26.x) switches "sync", or a class path ending in SyncWorker, to its threaded worker when
// --threads is above 1.
func ClassOf(s Settings) Class { return EffectiveClass(s.WorkerClass, s.Threads) }

// EffectiveClass applies Gunicorn's rule to a worker_class setting and --threads; "" is the
// default, sync.
func EffectiveClass(workerClass string, threads int) Class {
	if workerClass == "" {
		workerClass = "sync"
	}
	if (workerClass == "sync" || strings.HasSuffix(workerClass, "SyncWorker")) && threads > 1 {
		return "gthread"
	}
	return Class(workerClass)
}

// LoggedClass is the class a "Using worker:" line names: Gunicorn wrote it after applying its
// rule, and ≤ 20.1 names the threaded worker "threads".
func LoggedClass(word string) Class {
	if word == "threads" {
		return "gthread"
	}
	return Class(word)
}

// family is what a class is built on.
type family int

const (
	familyUnknown family = iota // a class gwrap does not know (a custom one)
	familySync                  // one request at a time, a select(timeout/2) between requests
	familyThreads               // gthread: requests in a pool, the main thread polls
	familyLoop                  // gevent, eventlet, tornado, asgi, aiohttp, meinheld: an event loop
	familyUvicorn               // Uvicorn's workers: an asyncio loop that notifies every timeout/2
)

// loops are the event-loop classes, by a word their names hold (egg:gunicorn#gevent,
// gunicorn.workers.ggevent.GeventWorker, gevent_pywsgi…).
var loops = []string{"gevent", "eventlet", "tornado", "asgi", "aiohttp", "meinheld"}

func (c Class) family() family {
	s := string(c)
	low := strings.ToLower(s)
	switch {
	case s == "sync" || strings.HasSuffix(s, "SyncWorker") || low == "egg:gunicorn#sync":
		return familySync
	case s == "gthread" || strings.Contains(s, "gthread") || strings.HasSuffix(s, "ThreadWorker"):
		return familyThreads
	case strings.Contains(low, "uvicorn"):
		return familyUvicorn
	}
	for _, l := range loops {
		if strings.Contains(low, l) {
			return familyLoop
		}
	}
	return familyUnknown
}

// Heartbeat is how long an idle worker of the class stays silent at this timeout (Gunicorn's
// gunicorn/workers/base.py sets a worker's notify period to timeout/2, sync.py waits that long
// when idle): an idle sync or Uvicorn worker beats only every
// timeout/2; gthread and the event-loop classes about every second. A class gwrap does not know
// is given timeout/2 too, so that an idle worker is never called late.
func (c Class) Heartbeat(timeout time.Duration) time.Duration {
	switch c.family() {
	case familyThreads, familyLoop:
		return time.Second
	}
	return timeout / 2
}

// Async reports whether the class serves from threads or an event loop: a long request alone
// does not time its worker out, only a blocked main thread or loop does. False for sync and for
// a class gwrap does not know.
func (c Class) Async() bool {
	switch c.family() {
	case familyThreads, familyLoop, familyUvicorn:
		return true
	}
	return false
}

// AbortUnwind is how long a worker of the class may go on beating after Gunicorn's SIGABRT
// before it exits: an event-loop worker (gevent, eventlet) leaves its loop and then serves its
// open connections for up to the graceful timeout, beating every second (ggevent.py's run), so
// a beat after the WORKER TIMEOUT line is no sign it recovered; the other classes exit from the
// signal handler at once (base.py's handle_abort).
func (c Class) AbortUnwind(graceful time.Duration) time.Duration {
	if c.family() == familyLoop {
		return graceful + time.Second
	}
	return 0
}
