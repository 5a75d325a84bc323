package probes

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseUptime(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"12345.67 23456.78\n", 12345670 * time.Millisecond, true},
		{"0.50 1.00\n", 500 * time.Millisecond, true},
		{"", 0, false},
		{"abc 1\n", 0, false},
		{"-1 2\n", 0, false},
		{"1e300 2\n", 0, false},
	} {
		got, err := parseUptime([]byte(c.in))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseUptime(%q) = %v, %v; want %v ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

// TestAge: a process's age is the uptime minus its start ticks; a start after the uptime is an
// error, not a negative or zero age.
func TestAge(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "uptime"), []byte("100.25 180.00\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := FS{root: root}
	if age, err := fs.Age(ID{PID: 7, StartTime: 2000}); err != nil || age != 80250*time.Millisecond {
		t.Errorf("Age = %v, %v; want 80.25s", age, err)
	}
	if age, err := fs.Age(ID{PID: 7, StartTime: 20000}); err == nil {
		t.Errorf("Age of a process started after the uptime = %v, want an error", age)
	}
	if _, err := (FS{root: t.TempDir()}).Age(ID{PID: 7}); err == nil {
		t.Error("Age without <proc>/uptime: no error")
	}
}
