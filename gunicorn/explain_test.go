package gunicorn

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestExplainGolden runs Explain on every fixture log and compares text and JSON with the golden
// files (go test ./gunicorn -run Golden -update rewrites them; review the diff).
func TestExplainGolden(t *testing.T) {
	logs, _ := filepath.Glob("testdata/logs/*.log")
	if len(logs) < 8 {
		t.Fatalf("fixtures missing: %v", logs)
	}
	for _, path := range logs {
		name := strings.TrimSuffix(filepath.Base(path), ".log")
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ex, err := Explain(f)
			if err != nil {
				t.Fatal(err)
			}
			var text, js bytes.Buffer
			if err := ex.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			if err := ex.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata", "explain", name+".txt"), text.Bytes())
			golden(t, filepath.Join("testdata", "explain", name+".json"), js.Bytes())
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file; got:\n%s", path, got)
	}
}

// TestExplainFacts checks the contract facts directly, independent of the golden files.
func TestExplainFacts(t *testing.T) {
	type inc struct {
		pid                  int
		kind, signal         string
		escalation, possible bool
	}
	for _, tc := range []struct {
		log  string
		want []inc
	}{
		{"gunicorn-22.0.0-sync.log", []inc{{3681, "timeout", "", false, false}, {3682, "signal", "SIGKILL", false, true}, {3688, "exit", "", false, false}, {3690, "signal", "SIGABRT", false, false}}},
		{"gunicorn-20.1.0-sync.log", []inc{{3724, "timeout", "", false, false}, {3723, "signal", "SIGKILL", false, true}, {3730, "signal", "SIGABRT", false, false}}},
		{"gunicorn-21.2.0-written.log", []inc{{201, "timeout", "", false, false}, {202, "timeout", "SIGKILL", true, false}, {203, "signal", "SIGKILL", false, true}, {204, "signal", "SIGSEGV", false, false}, {205, "signal", "SIGABRT", false, false}}},
		{"gunicorn-23.0.0-written.log", []inc{{301, "boot_failure", "", false, false}}},
		{"gunicorn-26.1.0-written.log", []inc{{401, "timeout", "SIGABRT", false, false}, {402, "signal", "SIGKILL", false, true}, {403, "exit", "", false, false}}},
		{"app-service-default_docker.log", []inc{{3681, "timeout", "", false, false}, {3682, "signal", "SIGKILL", false, true}, {3688, "exit", "", false, false}, {3690, "signal", "SIGABRT", false, false}}},
	} {
		t.Run(tc.log, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", "logs", tc.log))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			ex, err := Explain(f)
			if err != nil {
				t.Fatal(err)
			}
			var got []inc
			for _, i := range ex.Incidents {
				got = append(got, inc{i.PID, i.Kind, i.Signal, i.TimeoutEscalation, i.PossibleOOM})
			}
			if len(got) != len(tc.want) {
				t.Fatalf("incidents %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("incident %d: %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestExplainReadsGwrapJSON: gwrap's own output explains like the plain log.
func TestExplainReadsGwrapJSON(t *testing.T) {
	plain, err := os.ReadFile("testdata/logs/gunicorn-21.2.0-written.log")
	if err != nil {
		t.Fatal(err)
	}
	var wrapped bytes.Buffer
	for _, l := range strings.Split(strings.TrimSpace(string(plain)), "\n") {
		b, _ := json.Marshal(map[string]string{"event": "gunicorn.log", "line": l, "level": "info"})
		wrapped.Write(append(b, '\n'))
		wrapped.WriteString(`{"event":"worker.boot","pid":1,"message":"x"}` + "\n")
	}
	a, _ := Explain(bytes.NewReader(plain))
	b, _ := Explain(&wrapped)
	ja, _ := json.Marshal(a.Incidents)
	jb, _ := json.Marshal(b.Incidents)
	if !bytes.Equal(ja, jb) {
		t.Errorf("JSON input explained differently:\n%s\n%s", ja, jb)
	}
}

// TestExplainVanished: 20.1 logs no exit code, but a worker that booted and said nothing before
// the master's shutdown died unlogged (the os._exit(7) worker of the real 20.1 run); 21+ logs
// every death, so its quiet workers are not called dead.
func TestExplainVanished(t *testing.T) {
	for _, tc := range []struct {
		log  string
		want int
		pid  string
	}{
		{"gunicorn-20.1.0-sync.log", 1, "worker 3727 "},
		{"gunicorn-19.9.0-written.log", 0, ""},
		{"gunicorn-26.1.0-written.log", 0, ""},
	} {
		b, err := os.ReadFile(filepath.Join("testdata", "logs", tc.log))
		if err != nil {
			t.Fatal(err)
		}
		ex, err := Explain(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if ex.Counts["vanished"] != tc.want || (tc.pid != "" && !strings.Contains(strings.Join(ex.Warnings, "\n"), tc.pid)) {
			t.Errorf("%s: vanished %d, warnings %q", tc.log, ex.Counts["vanished"], ex.Warnings)
		}
	}
}

// TestExplainDebugLog: --log-level debug logs the configuration and each request's start, so a
// timeout exactly at the 30 s default is seen (a real 20.1 run: GET /sleep, killed 31 s later).
func TestExplainDebugLog(t *testing.T) {
	b, err := os.ReadFile("testdata/logs/gunicorn-20.1.0-debug.log")
	if err != nil {
		t.Fatal(err)
	}
	ex, err := Explain(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if ex.Timeout != 30 || len(ex.Incidents) != 1 || ex.Incidents[0].Request != "GET /sleep" || ex.Incidents[0].RequestSeconds != 31 {
		t.Fatalf("timeout %d incidents %+v", ex.Timeout, ex.Incidents)
	}
	if len(ex.Warnings) != 1 || !strings.Contains(ex.Warnings[0], "default 30 s timeout") {
		t.Errorf("warnings %q", ex.Warnings)
	}
	// Without the request line, the configuration dump alone still says it.
	var noReq bytes.Buffer
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if !strings.Contains(l, "[DEBUG] GET ") {
			noReq.WriteString(l)
		}
	}
	ex, _ = Explain(&noReq)
	if len(ex.Warnings) != 2 || !strings.Contains(ex.Warnings[0], "timeout: 30") {
		t.Errorf("warnings %q", ex.Warnings)
	}
}
