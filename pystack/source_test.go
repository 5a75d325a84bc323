package pystack

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNthLine(t *testing.T) {
	long := strings.Repeat("x", 10000)
	src := "import time\n\ndef f():\n    time.sleep(600)  # at:sleep\n" + long + "\nlast\n\na" + strings.Repeat("é", 150) + "\n"
	for _, tc := range []struct {
		n    int
		want string
		err  bool
	}{
		{1, "import time", false},
		{2, "", false},
		{4, "time.sleep(600)  # at:sleep", false},
		{5, strings.Repeat("x", 200) + "…", false},
		{6, "last", false},
		{8, "a" + strings.Repeat("é", 99) + "…", false}, // 200 bytes would cut the 100th é in two
		{7, "", false},
		{9, "", true},
	} {
		got, err := nthLine(strings.NewReader(src), tc.n)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("nthLine(%d) = %q, %v; want %q (error %v)", tc.n, got, err, tc.want, tc.err)
		}
	}
}

func TestSource(t *testing.T) {
	proc := t.TempDir()
	h := &Hook{procRoot: proc}
	dir := filepath.Join(proc, "42", "root", "app")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "orders.py"), []byte("def load_report(cur):\n    cur.execute(\"SELECT pg_sleep(100)\")\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := h.Source(42, Frame{"/app/orders.py", 2, "load_report"})
	if err != nil || got != `cur.execute("SELECT pg_sleep(100)")` {
		t.Errorf("Source = %q, %v", got, err)
	}
	for _, f := range []Frame{{"<frozen runpy>", 1, "f"}, {"/app/orders.py", 0, "f"}, {"/app/gone.py", 1, "f"}, {"/app/orders.py", 9, "f"}} {
		if _, err := h.Source(42, f); !errors.Is(err, ErrNoSource) {
			t.Errorf("Source(%v): %v, want ErrNoSource", f, err)
		}
	}
}
