package pystack

import (
	"context"
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "write the dumps the live tests take into testdata/dumps")

func newHook(t *testing.T) *Hook {
	t.Helper()
	h, err := Install(Options{Parent: t.TempDir()})
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
}

var blockCases = []blockCase{
	{name: "sync-sleep", route: "/sleep", ready: "sleep", flags: []string{"stackapp:app"}, file: "stackapp.py", fn: "sleep_long", marker: "sleep"},
	{name: "sync-cpu-gil", route: "/cpu", ready: "cpu", flags: []string{"stackapp:app"}, file: "stackapp.py", fn: "burn", marker: "cpu"},
	{name: "sync-upstream", route: "/upstream", ready: "upstream", flags: []string{"stackapp:app"}, file: "stackapp.py", fn: "read_upstream", marker: "upstream"},
	{name: "gthread-sleep", route: "/sleep", ready: "sleep", flags: []string{"-k", "gthread", "--threads", "2", "stackapp:app"}, file: "stackapp.py", fn: "sleep_long", marker: "sleep", otherThread: true},
	{name: "gevent-cpu", route: "/cpu", ready: "cpu", flags: []string{"-k", "gevent", "stackapp:app"}, file: "stackapp.py", fn: "burn", marker: "cpu"},
	{name: "uvicorn-block", route: "/block", ready: "block", flags: []string{"-k", "uvicorn.workers.UvicornWorker", "stackapp:asgi"}, file: "stackapp.py", fn: "asgi", marker: "block"},
	{name: "sync-sleep-as-nobody", route: "/sleep", ready: "sleep", flags: []string{"--user", "nobody", "--group", "nogroup", "stackapp:app"}, file: "stackapp.py", fn: "sleep_long", marker: "sleep"},
	{name: "boot", ready: "boot", flags: []string{"bootapp:app"}, file: "bootapp.py", fn: "<module>", marker: "boot"},
}

// TestLiveStackOfBlockedWorker: for every worker class and way of being stuck, on every Gunicorn
// at hand, Take names the app's line while the worker is stuck, and the worker lives on.
func TestLiveStackOfBlockedWorker(t *testing.T) {
	upstream := silentUpstream(t)
	for _, g := range gunicorns(t) {
		for _, c := range blockCases {
			t.Run(g.name+"/"+c.name, func(t *testing.T) {
				h := newHook(t)
				s := startGunicorn(t, h, g, []string{"UPSTREAM_PORT=" + upstream}, append([]string{"-w", "1", "--timeout", "120"}, c.flags...)...)
				pid := s.workers(t, h, 1)[0]
				if c.route != "" {
					s.get(t, c.route)
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
			s.get(t, "/segv")
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
