package pystack

import (
	"context"
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/inflight"
)

var update = flag.Bool("update", false, "write the dumps the live tests take into testdata/dumps")

func newHook(t *testing.T) *Hook {
	t.Helper()
	h, err := Install(Options{Parent: t.TempDir(), Requests: "names"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// keep writes the raw dump of pid to testdata/dumps/name.txt under -update (the parser's fixtures).
func keep(t *testing.T, h *Hook, pid int, name string) {
	t.Helper()
	if !*update {
		return
	}
	b, err := os.ReadFile(h.stackFile(pid))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata/dumps", name+".txt"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// blockCase is one way a worker gets stuck: Gunicorn flags, the request, and the app line that
// must come out as the stack's top.
type blockCase struct {
	name, route, ready string
	flags              []string
	file, fn, marker   string
	otherThread        bool // the app frame is in a request thread, not the main thread
	model              inflight.Model
	since              int // the oldest Gunicorn major release with this worker class; 0 all
}

var blockCases = []blockCase{
	{name: "sync-sleep", route: "/sleep", ready: "sleep", flags: []string{"stackapp:app"}, file: "stackapp.py", fn: "sleep_long", marker: "sleep", model: inflight.ModelThread},
	{name: "sync-cpu-gil", route: "/cpu", ready: "cpu", flags: []string{"stackapp:app"}, file: "stackapp.py", fn: "burn", marker: "cpu", model: inflight.ModelThread},
	{name: "sync-upstream", route: "/upstream", ready: "upstream", flags: []string{"stackapp:app"}, file: "stackapp.py", fn: "read_upstream", marker: "upstream", model: inflight.ModelThread},
	{name: "gthread-sleep", route: "/sleep", ready: "sleep", flags: []string{"-k", "gthread", "--threads", "2", "stackapp:app"}, file: "stackapp.py", fn: "sleep_long", marker: "sleep", otherThread: true, model: inflight.ModelThread},
	{name: "gevent-cpu", route: "/cpu", ready: "cpu", flags: []string{"-k", "gevent", "stackapp:app"}, file: "stackapp.py", fn: "burn", marker: "cpu", model: inflight.ModelGreenlet},
	{name: "uvicorn-block", route: "/block", ready: "block", flags: []string{"-k", "uvicorn.workers.UvicornWorker", "stackapp:asgi"}, file: "stackapp.py", fn: "asgi", marker: "block", model: inflight.ModelTask},
	{name: "asgi-block", route: "/block", ready: "block", flags: []string{"-k", "asgi", "stackapp:asgi"}, file: "stackapp.py", fn: "asgi", marker: "block", model: inflight.ModelTask, since: 24},
	{name: "sync-sleep-as-nobody", route: "/sleep", ready: "sleep", flags: []string{"--user", "nobody", "--group", "nogroup", "stackapp:app"}, file: "stackapp.py", fn: "sleep_long", marker: "sleep", model: inflight.ModelThread},
	{name: "boot", ready: "boot", flags: []string{"bootapp:app"}, file: "bootapp.py", fn: "<module>", marker: "boot"},
}

// secretQuery is the query every live request carries: its value must never be recorded.
const secretQuery = "?token=s3cret-in-query"

// checkRequest checks that the worker's request file names the one request in flight, route
// with its query's value dropped, served by what the class serves with (thread: the id of the
// thread the stack's top is in, when that thread is the request's); it returns the request.
func checkRequest(t *testing.T, h *Hook, pid int, route string, model inflight.Model, thread string) inflight.Request {
	t.Helper()
	tb, err := inflight.ReadFile(h.RequestsFile(pid), inflight.QueryFull)
	if err != nil {
		t.Fatalf("request file: %v", err)
	}
	if len(tb.InFlight) != 1 || tb.Bad != 0 || tb.Model != model || !tb.Belongs(pid, 0) || tb.StartTicks == 0 {
		t.Fatalf("request table %+v", tb)
	}
	r := tb.InFlight[0]
	if r.Method != "GET" || r.Target() != route+"?token="+inflight.Ellipsis || r.Age(monotonic(t)) <= 0 {
		t.Errorf("in flight: %s, %+v", r, r)
	}
	if (model == inflight.ModelThread) != (r.Task == 0) || thread != "" && r.ThreadID() != thread {
		t.Errorf("served by thread %s task %d; want the %s of thread %q", r.ThreadID(), r.Task, model, thread)
	}
	if b, _ := os.ReadFile(h.RequestsFile(pid)); strings.Contains(string(b), "s3cret") {
		t.Error("the query's value is in the request file")
	}
	return r
}

func monotonic(t *testing.T) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ts.Nano())
}

// TestLiveStackOfBlockedWorker: for every worker class and way of being stuck, on every Gunicorn
// at hand, Take names the app's line while the worker is stuck, and the worker lives on.
func TestLiveStackOfBlockedWorker(t *testing.T) {
	upstream := silentUpstream(t)
	for _, g := range gunicorns(t) {
		for _, c := range blockCases {
			if major, _ := strconv.Atoi(strings.SplitN(g.name, ".", 2)[0]); major < c.since {
				continue // no such worker class in this release (a skip would fail CI)
			}
			t.Run(g.name+"/"+c.name, func(t *testing.T) {
				h := newHook(t)
				s := startGunicorn(t, h, g, []string{"UPSTREAM_PORT=" + upstream}, append([]string{"-w", "1", "--timeout", "120"}, c.flags...)...)
				pid := s.workers(t, h, 1)[0]
				if c.route != "" {
					s.get(t, c.route+secretQuery)
				}
				s.waitReady(t, c.ready)
				st, top, took := takeAt(t, h, pid, c.file, marker(t, c.file, c.marker))
				t.Logf("top %s, %d threads, took %v", top, len(st.Threads), took)
				if src, err := h.Source(pid, top.Frame); err != nil || !strings.HasSuffix(src, "# at:"+c.marker) {
					t.Errorf("Source(%v) = %q, %v", top.Frame, src, err)
				}
				if top.Frame.Func != c.fn {
					t.Errorf("top function %q, want %q", top.Frame.Func, c.fn)
				}
				cur := -1
				for i, th := range st.Threads {
					if th.Current {
						cur = i
					}
				}
				if cur != len(st.Threads)-1 {
					t.Errorf("the current (main) thread is #%d of %d, want the last", cur, len(st.Threads))
				}
				if (top.Thread != st.Threads[cur].ID) != c.otherThread {
					t.Errorf("top in thread %s, main thread %s; want other thread: %v", top.Thread, st.Threads[cur].ID, c.otherThread)
				}
				if st.Fatal != "" {
					t.Errorf("Fatal %q in a live dump", st.Fatal)
				}
				if c.route != "" {
					thread := ""
					if c.model == inflight.ModelThread {
						thread = top.Thread
					}
					checkRequest(t, h, pid, c.route, c.model, thread)
				}
				// A second stack of the same worker: the file starts afresh, the worker lives on.
				st2, err := h.Take(context.Background(), pid)
				if err != nil {
					t.Fatalf("second Take: %v", err)
				}
				if len(st2.Threads) != len(st.Threads) {
					t.Errorf("second dump has %d threads, first %d", len(st2.Threads), len(st.Threads))
				}
				if err := syscallKill0(pid); err != nil {
					t.Errorf("worker %d after two stacks: %v", pid, err)
				}
				if _, crashed := h.Crash(pid); crashed {
					t.Errorf("Crash(%d) found a crash in a live worker's file", pid)
				}
				if g.name == "20.1" && !strings.Contains(c.name, "nobody") {
					keep(t, h, pid, c.name)
				}
			})
		}
	}
}

// silentUpstream listens on 127.0.0.1 and accepts connections it never answers.
func silentUpstream(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { l.Close() })
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// TestLiveCrashStack: a worker that dies of SIGSEGV leaves its stack; Crash returns it.
func TestLiveCrashStack(t *testing.T) {
	for _, g := range gunicorns(t) {
		t.Run(g.name, func(t *testing.T) {
			h := newHook(t)
			s := startGunicorn(t, h, g, nil, "-w", "1", "stackapp:app")
			pid := s.workers(t, h, 1)[0]
			s.get(t, "/segv"+secretQuery)
			s.waitReady(t, "segv")
			deadline := time.Now().Add(10 * time.Second)
			var st Stack
			for ok := false; !ok; st, ok = h.Crash(pid) {
				if time.Now().After(deadline) {
					t.Fatalf("no crash dump from %d", pid)
				}
				time.Sleep(10 * time.Millisecond) // polling with a deadline
			}
			if st.Fatal != "Segmentation fault" {
				t.Errorf("Fatal %q", st.Fatal)
			}
			top, ok := st.Top()
			want := marker(t, "stackapp.py", "segv")
			if !ok || top.Frame.Line != want || top.Frame.Func != "crash" || top.Call != "ctypes" || top.Func != "string_at" {
				t.Errorf("top %+v (ok %v), want stackapp.py:%d in crash (ctypes string_at)\n%s", top, ok, want, strings.Join(st.Lines(), "\n"))
			}
			if strings.Contains(s.stderr.String(), "Fatal Python error") {
				t.Errorf("the crash dump reached Gunicorn's stderr")
			}
			// The request the worker died in is still recorded, as in flight.
			checkRequest(t, h, pid, "/segv", inflight.ModelThread, "")
			if g.name == "20.1" {
				keep(t, h, pid, "sync-segv")
			}
			h.Forget(pid)
			if _, err := os.Stat(h.stackFile(pid)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Forget left %s: %v", h.stackFile(pid), err)
			}
		})
	}
}
