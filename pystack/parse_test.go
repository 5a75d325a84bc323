package pystack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The dumps in testdata/dumps were taken by the live tests (go test -run TestLive -args -update)
// from Debian's Gunicorn 20.1 under Debian's python3.11.
func TestParseCapturedDumps(t *testing.T) {
	for _, tc := range []struct {
		file    string
		threads int
		fatal   string
		top     string // Top().String()
		inner   Frame  // the current thread's innermost frame
	}{
		{"sync-sleep", 1, "", "app/stackapp.py:17 in sleep_long", Frame{"/work/wt-pystack/pystack/testdata/app/stackapp.py", 17, "sleep_long"}},
		{"sync-cpu-gil", 1, "", "app/stackapp.py:22 in burn", Frame{"/work/wt-pystack/pystack/testdata/app/stackapp.py", 22, "burn"}},
		{"sync-upstream", 1, "", "app/stackapp.py:28 in read_upstream", Frame{"/work/wt-pystack/pystack/testdata/app/stackapp.py", 28, "read_upstream"}},
		{"gthread-sleep", 2, "", "app/stackapp.py:17 in sleep_long", Frame{"/usr/lib/python3.11/selectors.py", 468, "select"}},
		{"gevent-cpu", 1, "", "app/stackapp.py:22 in burn", Frame{"/work/wt-pystack/pystack/testdata/app/stackapp.py", 22, "burn"}},
		{"uvicorn-block", 1, "", "app/stackapp.py:66 in asgi", Frame{"/work/wt-pystack/pystack/testdata/app/stackapp.py", 66, "asgi"}},
		{"boot", 1, "", "app/bootapp.py:7 in <module>", Frame{"/work/wt-pystack/pystack/testdata/app/bootapp.py", 7, "<module>"}},
		{"sync-segv", 1, "Segmentation fault", "app/stackapp.py:33 in crash (ctypes string_at)", Frame{"/usr/lib/python3.11/ctypes/__init__.py", 519, "string_at"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata/dumps", tc.file+".txt"))
			if err != nil {
				t.Fatal(err)
			}
			st, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Threads) != tc.threads || st.Fatal != tc.fatal {
				t.Fatalf("%d threads, fatal %q; want %d, %q", len(st.Threads), st.Fatal, tc.threads, tc.fatal)
			}
			main := st.Threads[len(st.Threads)-1]
			if !main.Current {
				t.Errorf("the last thread is not the current one")
			}
			if got := main.Frames[len(main.Frames)-1]; got != tc.inner {
				t.Errorf("innermost %+v, want %+v", got, tc.inner)
			}
			outer := Frame{"/usr/bin/gunicorn", 33, "<module>"}
			if tc.file == "gevent-cpu" {
				// A greenlet's frames end where the greenlet started, not at the thread's start.
				outer = Frame{"/usr/lib/python3/dist-packages/gevent/baseserver.py", 34, "_handle_and_close_when_done"}
			}
			if got := main.Frames[0]; got != outer {
				t.Errorf("outermost %+v, want %+v", got, outer)
			}
			top, ok := st.Top()
			if !ok || top.String() != tc.top {
				t.Errorf("Top %q (ok %v), want %q", top.String(), ok, tc.top)
			}
			lines := st.Lines()
			if n := strings.Count(string(b), "  File "); len(lines) != n+len(st.Threads) {
				t.Errorf("Lines has %d entries for %d frames and %d threads", len(lines), n, len(st.Threads))
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Stack
		err  error
	}{
		{name: "empty", in: "", err: ErrFormat},
		{name: "not a dump", in: "[2026-01-01 00:00:00 +0000] [1] [INFO] Booting worker\n", err: ErrFormat},
		{name: "single thread", in: "Stack (most recent call first):\n  File \"/app/a.py\", line 3 in f\n  File \"/app/a.py\", line 9 in <module>\n",
			want: Stack{Threads: []Thread{{Current: true, Frames: []Frame{{"/app/a.py", 9, "<module>"}, {"/app/a.py", 3, "f"}}}}}},
		{name: "unknown parts and no frame",
			in:   "Thread 0x1 (most recent call first):\n  <no Python frame>\n\nCurrent thread 0x2 (most recent call first):\n  Garbage-collecting\n  File ???, line ??? in ???\n",
			want: Stack{Threads: []Thread{{ID: "0x1"}, {ID: "0x2", Current: true, GC: true, Frames: []Frame{{"???", 0, "???"}}}}}},
		{name: "frames cut at 100 and threads cut",
			in:   "Current thread 0x2 (most recent call first):\n  File \"/app/r.py\", line 2 in rec\n  ...\n\n...\n",
			want: Stack{ThreadCut: true, Threads: []Thread{{ID: "0x2", Current: true, Truncated: true, Frames: []Frame{{"/app/r.py", 2, "rec"}}}}}},
		{name: "quote in a file name, escapes kept as printed",
			in:   "Current thread 0x2 (most recent call first):\n  File \"/app/we\", line 1\\xe9.py\", line 5 in caf\\xe9\n",
			want: Stack{Threads: []Thread{{ID: "0x2", Current: true, Frames: []Frame{{"/app/we\", line 1\\xe9.py", 5, "caf\\xe9"}}}}}},
		{name: "crash with extension modules and a cut last line",
			in:   "Fatal Python error: Bus error\n\nCurrent thread 0x2 (most recent call first):\n  File \"/app/m.py\", line 7 in load\n\nExtension modules: numpy.core._multiarray_umath (total: 1)\n",
			want: Stack{Fatal: "Bus error", Threads: []Thread{{ID: "0x2", Current: true, Frames: []Frame{{"/app/m.py", 7, "load"}}}}}},
		{name: "partial last line is dropped",
			in:   "Current thread 0x2 (most recent call first):\n  File \"/app/a.py\", line 3 in f\n  File \"/app/a.p",
			want: Stack{Threads: []Thread{{ID: "0x2", Current: true, Frames: []Frame{{"/app/a.py", 3, "f"}}}}}},
		{name: "bad line number", in: "Current thread 0x2 (most recent call first):\n  File \"/a.py\", line x in f\n",
			want: Stack{Threads: []Thread{{ID: "0x2", Current: true}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if tc.err != nil {
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	ents, _ := os.ReadDir("testdata/dumps")
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join("testdata/dumps", e.Name()))
		f.Add(b)
	}
	f.Add([]byte("Current thread 0x2 (most recent call first):\n  File \"\", line  in \n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := Parse(b)
		if err != nil {
			return
		}
		if len(st.Threads) > maxThreads {
			t.Fatalf("%d threads kept", len(st.Threads))
		}
		for _, th := range st.Threads {
			if len(th.Frames) > maxFrames {
				t.Fatalf("%d frames kept", len(th.Frames))
			}
			for _, fr := range th.Frames {
				if fr.Func == "" || fr.Line < 0 || len(fr.File) > maxFileName+len("…") || len(fr.Func) > maxFuncName+len("…") {
					t.Fatalf("frame %+v from %q", fr, b)
				}
			}
		}
		st.Top()
		st.Lines()
	})
}

// TestParseBoundsWhatTheAppWrites: the worker holds its dump file open and can write anything
// into it; a dump of 10,000 threads of 10,000 frames with 100 KiB names is cut to the bounds
// faulthandler itself keeps (100 threads of 100 frames), and says it was cut.
func TestParseBoundsWhatTheAppWrites(t *testing.T) {
	var b strings.Builder
	long := strings.Repeat("n", 100<<10)
	for i := range 10000 {
		fmt.Fprintf(&b, "Thread 0x%x (most recent call first):\n", i)
		if i > 0 {
			fmt.Fprintf(&b, "  File \"/app/t.py\", line %d in f\n", i)
			continue
		}
		fmt.Fprintf(&b, "  File \"/app/%s.py\", line 1 in %s\n", long, long)
		for j := range 10000 {
			fmt.Fprintf(&b, "  File \"/app/f.py\", line %d in f\n", j+2)
		}
	}
	st, err := Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Threads) != maxThreads || !st.ThreadCut {
		t.Errorf("%d threads kept (cut %v), want %d", len(st.Threads), st.ThreadCut, maxThreads)
	}
	th := st.Threads[0]
	if len(th.Frames) != maxFrames || !th.Truncated {
		t.Fatalf("%d frames kept (truncated %v), want %d", len(th.Frames), th.Truncated, maxFrames)
	}
	// Frames are innermost last: the long-named one was printed first (innermost).
	if f := th.Frames[len(th.Frames)-1]; len(f.File) > maxFileName+len("…") || len(f.Func) > maxFuncName+len("…") {
		t.Errorf("names kept at %d and %d bytes", len(f.File), len(f.Func))
	}
	size := 0
	for _, l := range st.Lines() {
		size += len(l)
	}
	if size > 4<<20 {
		t.Errorf("the report's python_stack would be %d bytes", size)
	}
}
