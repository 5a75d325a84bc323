package gunicorn

import (
	"strings"
	"testing"
	"time"
)

const pfx = "[2026-11-25 03:42:36 +0000] [3679] "

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       Event
	}{
		{"starting", pfx + "[INFO] Starting gunicorn 22.0.0", Event{Kind: KindStarting, Version: "22.0.0"}},
		{"listening", pfx + "[INFO] Listening at: http://127.0.0.1:18101,unix:/tmp/s (3679)", Event{Kind: KindListening, Listeners: []string{"http://127.0.0.1:18101", "unix:/tmp/s"}}},
		{"using worker", pfx + "[INFO] Using worker: uvicorn.workers.UvicornWorker", Event{Kind: KindUsingWorker, WorkerClass: "uvicorn.workers.UvicornWorker"}},
		{"booting", pfx + "[INFO] Booting worker with pid: 3681", Event{Kind: KindBooting, WorkerPID: 3681}},
		{"exiting", pfx + "[INFO] Worker exiting (pid: 3681)", Event{Kind: KindWorkerExiting, WorkerPID: 3681}},
		{"timeout", pfx + "[CRITICAL] WORKER TIMEOUT (pid:3681)", Event{Kind: KindTimeout, WorkerPID: 3681}},
		{"20.1 signal", pfx + "[WARNING] Worker with pid 3723 was terminated due to signal 9", Event{Kind: KindSignaled, WorkerPID: 3723, Signal: 9, SignalName: "SIGKILL"}},
		{"21+ SIGKILL", pfx + "[ERROR] Worker (pid:3682) was sent SIGKILL! Perhaps out of memory?", Event{Kind: KindSignaled, WorkerPID: 3682, Signal: 9, SignalName: "SIGKILL", OOMHint: true}},
		{"21+ SIGABRT", pfx + "[WARNING] Worker (pid:3712) was sent SIGABRT!", Event{Kind: KindSignaled, WorkerPID: 3712, Signal: 6, SignalName: "SIGABRT"}},
		{"21-23 core dump", pfx + "[ERROR] Worker (pid:5) was sent code 134!", Event{Kind: KindSignaled, WorkerPID: 5, Signal: 6, SignalName: "SIGABRT", CoreDump: true}},
		{"exited", pfx + "[ERROR] Worker (pid:3688) exited with code 7", Event{Kind: KindExited, WorkerPID: 3688, ExitCode: 7}},
		{"exited period", pfx + "[ERROR] Worker (pid:3688) exited with code 7.", Event{Kind: KindExited, WorkerPID: 3688, ExitCode: 7}},
		{"handling", pfx + "[INFO] Handling signal: ttin", Event{Kind: KindHandlingSignal, SignalIn: "ttin"}},
		{"hang up", pfx + "[INFO] Hang up: Master", Event{Kind: KindHangUp}},
		{"shutting down", pfx + "[INFO] Shutting down: Master", Event{Kind: KindShuttingDown}},
		{"reason", pfx + "[ERROR] Reason: Worker failed to boot.", Event{Kind: KindReason, Reason: "Worker failed to boot."}},
		{"request error", pfx + "[ERROR] Error handling request /sleep?30", Event{Kind: KindRequestError, URI: "/sleep?30"}},
		{"request error 25.3", pfx + "[ERROR] Error handling request GET /sleep", Event{Kind: KindRequestError, Method: "GET", URI: "/sleep"}},
		{"request error no uri", pfx + "[ERROR] Error handling request (no URI read)", Event{Kind: KindRequestError}},
		{"worker exception", pfx + "[ERROR] Exception in worker process", Event{Kind: KindWorkerError}},
		{"master exception", pfx + "[ERROR] Unhandled exception in main loop", Event{Kind: KindMasterError}},
		{"autorestart", pfx + "[INFO] Autorestarting worker after current request.", Event{Kind: KindAutorestart}},
		{"graceful timeout", pfx + "[WARNING] Worker graceful timeout (pid:77)", Event{Kind: KindGracefulTimeout, WorkerPID: 77}},
		{"unknown", pfx + "[INFO] something else", Event{Kind: KindRaw}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseLine([]byte(tc.line))
			if got.PID != 3679 || got.Time.IsZero() || got.Level == "" || got.Line != tc.line {
				t.Errorf("prefix not parsed: %+v", got)
			}
			got.Time, got.PID, got.Level, got.Line, got.Message = time.Time{}, 0, "", "", ""
			if !equal(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func equal(a, b Event) bool {
	return a.Kind == b.Kind && a.WorkerPID == b.WorkerPID && a.Signal == b.Signal && a.SignalName == b.SignalName &&
		a.CoreDump == b.CoreDump && a.OOMHint == b.OOMHint && a.ExitCode == b.ExitCode && a.Version == b.Version &&
		a.WorkerClass == b.WorkerClass && strings.Join(a.Listeners, ",") == strings.Join(b.Listeners, ",") &&
		a.SignalIn == b.SignalIn && a.Reason == b.Reason && a.Method == b.Method && a.URI == b.URI
}

func TestParseLineForms(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		kind       Kind
		pid        int
	}{
		// Access-log lines are never error-log lines, whatever their path says.
		{"access", `127.0.0.1 - - [25/Nov/2026:03:42:30 +0000] "GET /WORKER%20TIMEOUT%20(pid:1) HTTP/1.1" 200 3 "-" "curl/8"`, KindAccess, 0},
		{"access with literal text", `10.0.0.1 - - [25/Nov/2026:03:42:30 +0000] "GET /x?q=WORKER TIMEOUT (pid:12) HTTP/1.1" 404 0 "-" "-"`, KindAccess, 0},
		// A JSON log config: the message text is matched anywhere.
		{"json", `{"time": "2026-11-25T03:42:36", "level": "CRITICAL", "msg": "WORKER TIMEOUT (pid:3681)"}`, KindTimeout, 3681},
		// App Service's default_docker.log prefix.
		{"app service", "2024-06-28T20:44:32.8354846Z " + pfx + "[CRITICAL] WORKER TIMEOUT (pid:42)", KindTimeout, 42},
		{"syslog", "<10>gunicorn.app.app.error: [31255] WORKER TIMEOUT (pid:31297)", KindTimeout, 31297},
		{"traceback line", `  File "/srv/app/app.py", line 4, in app`, KindRaw, 0},
		{"empty", "", KindRaw, 0},
		{"prefix only", "[2026-11-25 03:42:36 +0000] [1] [INFO] ", KindRaw, 0},
		{"bad pid", pfx + "[CRITICAL] WORKER TIMEOUT (pid:abc)", KindRaw, 0},
		{"bad date", "[2026-13-45 99:42:36 +0000] [1] [INFO] Booting worker with pid: 5", KindBooting, 5},
		// The leftmost message wins: a request path cannot turn an error into a timeout.
		{"uri holds a marker", pfx + "[ERROR] Error handling request /x?WORKER TIMEOUT (pid:1)", KindRequestError, 0},
		// A marker that does not parse lets a later one count.
		{"broken then good", "WORKER TIMEOUT (pid:?) then Worker exiting (pid: 8)", KindWorkerExiting, 8},
		{"20.1 form broken", pfx + "[WARNING] Worker with pid 12 was stopped", KindRaw, 0},
		{"21 form broken", pfx + "[ERROR] Worker (pid:12) did something", KindRaw, 0},
		{"20.1 form cut", "Worker with pid ", KindRaw, 0},
		{"21 form cut", "Worker (pid:", KindRaw, 0},
		{"leading zeros", "Worker with pid 007 was terminated due to signal 9", KindSignaled, 7},
		{"leading zeros 21", "Worker (pid:0042) exited with code 3.", KindExited, 42},
		// Gunicorn's own reasons anywhere (a JSON log config), any other "Reason: " only alone.
		{"json reason", `{"level": "ERROR", "msg": "Reason: App failed to load."}`, KindReason, 0},
		{"app text reason", "the app said Reason: none", KindRaw, 0},
		{"reason alone", "Reason: Worker failed to boot.", KindReason, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseLine([]byte(tc.line))
			if got.Kind != tc.kind || got.WorkerPID != tc.pid {
				t.Errorf("%q: kind %s pid %d, want %s %d", tc.line, got.Kind, got.WorkerPID, tc.kind, tc.pid)
			}
		})
	}
	app := ParseLine([]byte("2024-06-28T20:44:32.8354846Z " + pfx + "[CRITICAL] WORKER TIMEOUT (pid:42)"))
	if app.PID != 3679 || app.Level != "CRITICAL" {
		t.Errorf("App Service prefix: %+v", app)
	}
}

func TestAssembler(t *testing.T) {
	a := NewAssembler(3, 1000)
	var done []Event
	for _, l := range []string{
		pfx + "[CRITICAL] WORKER TIMEOUT (pid:3681)",
		"[2026-11-25 03:42:36 +0000] [3681] [ERROR] Error handling request /sleep",
		"Traceback (most recent call last):",
		`  File "/srv/app/app2.py", line 4, in app`,
		"    time.sleep(30)",
		"SystemExit: 1",
		pfx + "[ERROR] Worker (pid:3688) exited with code 7",
		pfx + "[ERROR] Worker (pid:3688) exited with code 7.",
		pfx + "[ERROR] Worker (pid:3690) exited with code 7.",
	} {
		_, d := a.Add([]byte(l))
		done = append(done, d...)
	}
	done = append(done, a.Flush()...)
	kinds := []Kind{}
	for _, e := range done {
		kinds = append(kinds, e.Kind)
	}
	want := []Kind{KindTimeout, KindRequestError, KindExited, KindExited, KindExited}
	if len(done) != len(want) {
		t.Fatalf("done %v, want %v", kinds, want)
	}
	for i := range want {
		if done[i].Kind != want[i] {
			t.Fatalf("done %v, want %v", kinds, want)
		}
	}
	if tb := done[1].Traceback; len(tb) != 3 || tb[2] != "    time.sleep(30)" {
		t.Errorf("traceback %q, want the first 3 lines", tb)
	}
	if done[2].Repeat || !done[3].Repeat || done[4].Repeat {
		t.Errorf("repeat flags %v %v %v, want false true false", done[2].Repeat, done[3].Repeat, done[4].Repeat)
	}
}

func TestAssemblerFlushIdle(t *testing.T) {
	a := NewAssembler(10, 100)
	a.Add([]byte(pfx + "[ERROR] Exception in worker process"))
	a.Add([]byte("Traceback (most recent call last):"))
	if d := a.FlushIdle(); d != nil {
		t.Fatalf("flushed while lines were arriving: %v", d)
	}
	d := a.FlushIdle()
	if len(d) != 1 || d[0].Kind != KindWorkerError || len(d[0].Traceback) != 1 {
		t.Fatalf("idle flush %+v", d)
	}
	// Bounded in bytes.
	a.Add([]byte(pfx + "[ERROR] Exception in worker process"))
	a.Add([]byte(strings.Repeat("x", 500)))
	if d := a.Flush(); len(d[0].Traceback[0]) != 100 {
		t.Fatalf("traceback not bounded: %d bytes", len(d[0].Traceback[0]))
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		pfx + "[CRITICAL] WORKER TIMEOUT (pid:3681)",
		pfx + "[ERROR] Worker (pid:3682) was sent SIGKILL! Perhaps out of memory?",
		pfx + "[ERROR] Worker (pid:5) was sent code 134!",
		pfx + "[WARNING] Worker with pid 3723 was terminated due to signal 9",
		pfx + "[ERROR] Error handling request GET /x",
		pfx + "[INFO] Listening at: http://127.0.0.1:1 (1)",
		`127.0.0.1 - - [25/Nov/2026:03:42:30 +0000] "GET / HTTP/1.1" 200 3 "-" "curl/8"`,
		"[", "[2", "Worker (pid:", "] [", "", "Traceback (most recent call last):", "Reason: App failed to load.",
		pfx + "[CRITICAL] DIRTY WORKER TIMEOUT (pid:31851)",
		pfx + "[INFO] Spawned dirty worker (pid: 31851) with apps: ['dirty:Heavy']",
		pfx + "[WARNING] Execution timeout for app.ml:Heavy.predict after 300s",
		pfx + "[ERROR] Dirty arbiter (pid:31849) exited with code 1",
	} {
		f.Add([]byte(s))
	}
	a := NewAssembler(50, 4096)
	f.Fuzz(func(t *testing.T, line []byte) {
		ev := ParseLine(line)
		if ev.Line != string(line) {
			t.Fatalf("line not kept")
		}
		if ev.Kind == KindTimeout && ev.WorkerPID == 0 || ev.Kind == KindAccess && ev.PID != 0 ||
			ev.IsDirty() && ev.Kind != KindDirtyExecTimeout && ev.Kind != KindDirtyWorkerError && ev.WorkerPID == 0 ||
			ev.Kind == KindDirtyExecTimeout && (ev.App == "" || ev.Action == "") {
			t.Fatalf("inconsistent event %+v", ev)
		}
		_, done := a.Add(line)
		for _, d := range done {
			size := 0
			for _, l := range d.Traceback {
				size += len(l)
			}
			if len(d.Traceback) > 50 || size > 4096 {
				t.Fatalf("unbounded traceback: %d lines, %d bytes", len(d.Traceback), size)
			}
		}
	})
}

func BenchmarkParseLine(b *testing.B) {
	for _, tc := range []struct{ name, line string }{
		{"timeout", pfx + "[CRITICAL] WORKER TIMEOUT (pid:3681)"},
		{"info", pfx + "[INFO] GET /items/12345 handled in 12 ms by the app"},
		{"access", `127.0.0.1 - - [25/Nov/2026:03:42:30 +0000] "GET /items/12345 HTTP/1.1" 200 3 "-" "curl/8"`},
		{"plain", "app printed something on stdout without any prefix at all"},
	} {
		line := []byte(tc.line)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ParseLine(line)
			}
		})
	}
}
