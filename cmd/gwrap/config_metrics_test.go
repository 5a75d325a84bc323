package main

import (
	"errors"
	"io"
	"testing"
)

func TestConfigMetricsAndTerminationLog(t *testing.T) {
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	c, err := parseConfig([]string{"gunicorn"}, env(map[string]string{"GWRAP_METRICS_ADDR": ":9191", "GWRAP_TERMINATION_LOG": "/tmp/t"}), io.Discard)
	if err != nil || c.MetricsAddr != ":9191" || c.TerminationLog != "/tmp/t" {
		t.Fatalf("%v %+v", err, c)
	}
	if c, _ := parseConfig([]string{"gunicorn"}, env(nil), io.Discard); c.MetricsAddr != "" {
		t.Errorf("metrics on by default: %q", c.MetricsAddr)
	}
	for _, bad := range []string{"9191", "host:", "[::1"} {
		if _, err := parseConfig([]string{"--metrics-addr", bad, "gunicorn"}, env(nil), io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("--metrics-addr %q: %v", bad, err)
		}
	}
	exists := func(p string) bool { return p == kubeTerminationLog }
	absent := func(string) bool { return false }
	for _, tt := range []struct {
		flag   string
		exists func(string) bool
		want   string
	}{
		{"", exists, kubeTerminationLog},
		{"", absent, ""},
		{"off", exists, ""},
		{"/var/run/msg", exists, "/var/run/msg"},
	} {
		if got := (config{TerminationLog: tt.flag}).terminationLogPath(tt.exists); got != tt.want {
			t.Errorf("%q: %q, want %q", tt.flag, got, tt.want)
		}
	}
}
