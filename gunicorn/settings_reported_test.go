package gunicorn

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestParseReported: what a custom application's master reported through gwrap's hook (captured
// from Gunicorn 26.2.2 running internal/testkit/apps/server.py) gives its effective settings.
func TestParseReported(t *testing.T) {
	b, err := os.ReadFile("testdata/reported/custom-app-26.2.2.json")
	if err != nil {
		t.Fatal(err)
	}
	s, version, err := ParseReported(b)
	if err != nil {
		t.Fatal(err)
	}
	if version != "26.2.2" || s.Timeout != 7 || s.Workers != 2 || s.WorkerClass != "gthread" || s.Threads != 3 ||
		s.LogLevel != "warning" || s.ErrorLog != "/tmp/hk/err.log" || s.LoggerClass != "" || s.LogConfig != "" ||
		len(s.Bind) != 1 || s.Bind[0] != "127.0.0.1:18601" || s.GracefulTimeout != 30 || len(s.Problems) != 0 {
		t.Errorf("settings %+v version %q", s, version)
	}
	if s.Sources["timeout"] != SourceMaster || s.Sources["errorlog"] != SourceMaster {
		t.Errorf("sources %v", s.Sources)
	}
}

// TestParseReportedHostile: the report is the app's process's output: a value of the wrong type
// or out of range keeps the default and is said; a report that is not one is refused.
func TestParseReportedHostile(t *testing.T) {
	s, _, err := ParseReported([]byte(`{"version": "x", "values": {"timeout": 1e300, "workers": -3, "threads": 2.5,
		"worker_class": {"a": 1}, "bind": ["a", 7], "loglevel": "` + strings.Repeat("x", 5000) + `", "graceful_timeout": 9,
		"logger_class": "my.Logger", "logconfig_dict": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	d := Defaults()
	if s.Timeout != d.Timeout || s.Workers != d.Workers || s.Threads != d.Threads || s.WorkerClass != d.WorkerClass ||
		s.LogLevel != d.LogLevel || len(s.Bind) != 1 || s.Bind[0] != d.Bind[0] {
		t.Errorf("hostile values taken: %+v", s)
	}
	if len(s.Problems) != 6 || s.Sources["timeout"] != SourceUnknown {
		t.Errorf("problems %q sources %v", s.Problems, s.Sources)
	}
	if s.GracefulTimeout != 9 || s.LoggerClass != "my.Logger" || s.LogConfig != "logconfig_dict" {
		t.Errorf("sane values lost: %+v", s)
	}
	for _, bad := range []string{``, `[]`, `{"values": null}`, `{"values": 3}`, `{"version": "1", "values": {}` + strings.Repeat(" ", MaxReported) + `}`} {
		if _, _, err := ParseReported([]byte(bad)); !errors.Is(err, ErrReported) {
			t.Errorf("ParseReported(%.20q…) = %v, want ErrReported", bad, err)
		}
	}
}
