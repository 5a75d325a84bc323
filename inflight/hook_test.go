package inflight

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gwrap/gwrap/internal/testkit"
)

// runDriver runs the hook's recorder (pystack/sitecustomize.py) through testdata/driver.py's
// scenarios with Debian's python3 and returns the directory of their request files and what
// the driver printed.
func runDriver(t *testing.T) (string, map[string]any) {
	t.Helper()
	dir := t.TempDir()
	hook, err := filepath.Abs("../pystack/sitecustomize.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testkit.Python(t), "testdata/driver.py", hook, dir)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("driver: %v\n%s", err, stderr.String())
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("driver printed %q: %v", b, err)
	}
	return dir, out
}

// TestHookRecords: what the Python recorder writes is what Read reads, scenario by scenario.
func TestHookRecords(t *testing.T) {
	dir, out := runDriver(t)
	read := func(t *testing.T, name string, mode QueryMode) Table {
		t.Helper()
		tb, err := ReadFile(filepath.Join(dir, name+".req"), mode)
		if err != nil {
			t.Fatal(err)
		}
		if tb.Bad != 0 || tb.PID == 0 || tb.StartTicks == 0 || tb.Status != Recording {
			t.Errorf("table %+v", tb)
		}
		return tb
	}
	targets := func(rs []Request) []string {
		var s []string
		for _, r := range rs {
			s = append(s, r.String())
		}
		return s
	}
	same := func(t *testing.T, what string, got, want []string) {
		t.Helper()
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s:\n got %q\nwant %q", what, got, want)
		}
	}

	t.Run("sync", func(t *testing.T) {
		tb := read(t, "sync", QueryFull)
		same(t, "in flight", targets(tb.InFlight), []string{"GET /sleep/30?token=…&x=…&…&… from 10.0.0.7"})
		r := tb.InFlight[0]
		if tb.Class != "sync" || tb.Model != ModelThread || tb.Slots != 1 || tb.Served != 1 || tb.LastDuration <= 0 ||
			r.Thread == 0 || r.Task != 0 || r.Start == 0 || r.Cut || r.PathBytes != len("/sleep/30") {
			t.Errorf("table %+v, request %+v", tb, r)
		}
		if out["sync"] != "ok" {
			t.Errorf("the app answered %v", out["sync"])
		}
	})
	t.Run("query modes", func(t *testing.T) {
		for _, c := range []struct {
			file string
			mode QueryMode
			want string
		}{
			{"full", QueryFull, "/sleep/30?token=s3cret&x=1"},
			{"full", QueryNames, "/sleep/30?token=…&x=…"}, // gwrap's mode is stricter than the hook's
			{"full", QueryOff, "/sleep/30"},
			{"sync", QueryFull, "/sleep/30?token=…&x=…&…&…"}, // the hook's is stricter: values never recorded
			{"off", QueryFull, "/sleep/30"},
		} {
			tb := read(t, c.file, c.mode)
			if len(tb.InFlight) != 1 || tb.InFlight[0].Target() != c.want {
				t.Errorf("%s under %s: %q, want %q", c.file, c.mode, targets(tb.InFlight), c.want)
			}
		}
		b, _ := os.ReadFile(filepath.Join(dir, "sync.req"))
		if strings.Contains(string(b), "s3cret") {
			t.Error("the hook recorded a query value under names")
		}
	})
	t.Run("full table", func(t *testing.T) {
		tb := read(t, "full_table", QueryNames)
		same(t, "in flight", targets(tb.InFlight), []string{"GET /b from 10.0.0.7"})
		if tb.Unslotted != 1 || tb.Unrecorded != 1 || tb.Served != 1 {
			t.Errorf("table %+v", tb)
		}
	})
	t.Run("cut", func(t *testing.T) {
		tb := read(t, "exits", QueryNames)
		if len(tb.InFlight) != 0 || len(tb.Cut) != 1 || tb.Cut[0].Path != "/exits" || tb.Cut[0].End < tb.Cut[0].Start {
			t.Errorf("SystemExit: %+v", tb)
		}
		tb = read(t, "fails", QueryNames)
		if len(tb.InFlight)+len(tb.Cut) != 0 || tb.Served != 1 {
			t.Errorf("an app error ends the request: %+v", tb)
		}
		tb = read(t, "aborted", QueryNames)
		same(t, "cut", targets(tb.Cut), []string{"GET /late from 10.0.0.7"})
		same(t, "in flight", targets(tb.InFlight), []string{"GET /running from 10.0.0.7"})
		if tb.Abort == 0 || tb.Cut[0].End < tb.Abort {
			t.Errorf("abort %v, cut request %+v", tb.Abort, tb.Cut[0])
		}
	})
	t.Run("hostile", func(t *testing.T) {
		tb := read(t, "hostile", QueryFull)
		if len(tb.InFlight) != 3 {
			t.Fatalf("in flight: %q", targets(tb.InFlight))
		}
		r := tb.InFlight[0]
		if r.Method != `G\x1bET` || r.Target() != `/a\x00b\x0ac\xff\x7f?q=\x01` || r.Remote != `1.2.3.4\x1b[31m` {
			t.Errorf("control characters: %+v", r)
		}
		r = tb.InFlight[1]
		if r.PathBytes != 1<<20+1 || len(r.Path) != maxPath+len(Ellipsis) || !strings.HasSuffix(r.Path, "x"+Ellipsis) || r.Query != "k=v" {
			t.Errorf("1 MB path: %d bytes shown of %d, query %q", len(r.Path), r.PathBytes, r.Query)
		}
		// U+202E and U+0100 are not Latin-1: the WSGI hook records "?" for each; the backslash doubles.
		if r = tb.InFlight[2]; r.Path != `/?evil\\?` {
			t.Errorf("non-Latin-1: %q", r.Path)
		}
	})
	t.Run("bodies", func(t *testing.T) {
		tb := read(t, "bodies", QueryNames)
		if len(tb.InFlight) != 0 || tb.Served != 5 {
			t.Errorf("every body closed ends its request: %+v", tb)
		}
		b, _ := json.Marshal(out["bodies"])
		want := `{"file":{"len":null,"same":true,"type":"FileWrapper"},"gen":{"len":null,"same":false,"type":"_GwrapIter"},` +
			`"sentinel":{"len":null,"same":true,"type":"object"},"sized":{"len":1,"same":false,"type":"_GwrapSizedIter"},` +
			`"tuple":{"len":1,"same":false,"type":"_GwrapList"}}`
		if string(b) != want {
			t.Errorf("the server got %s\nwant %s", b, want)
		}
		tb = read(t, "dropped", QueryNames)
		if len(tb.InFlight) != 0 || out["dropped_reused"] != true {
			t.Errorf("a body dropped without close: %+v", tb)
		}
	})
	t.Run("not recorded", func(t *testing.T) {
		if out["odd_environ"] != "ok" || out["closed_map"] != "ok" {
			t.Errorf("requests the hook cannot record must run: %v", out)
		}
		tb := read(t, "fork", QueryNames)
		same(t, "in flight", targets(tb.InFlight), []string{"GET /parent from 10.0.0.7"})
	})
	t.Run("asgi", func(t *testing.T) {
		tb := read(t, "asgi", QueryNames)
		same(t, "in flight", targets(tb.InFlight), []string{"POST /wait?token=… from 10.1.2.3"})
		if tb.Model != ModelTask || tb.Served != 2 || len(tb.Cut) != 0 || out["asgi_wrapped"] != true || out["asgi2_wrapped"] != false {
			t.Errorf("table %+v, driver %v", tb, out)
		}
		if task := strconv.FormatUint(tb.InFlight[0].Task, 10); tb.InFlight[0].Task == 0 || task != out["asgi_waiting_task"] {
			t.Errorf("task %d, want %v", tb.InFlight[0].Task, out["asgi_waiting_task"])
		}
	})
}
