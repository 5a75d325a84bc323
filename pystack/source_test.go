package pystack

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/testkit"
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
	status := fmt.Sprintf("Uid:\t%[1]d\t%[1]d\t%[1]d\t%[1]d\nGid:\t%[2]d\t%[2]d\t%[2]d\t%[2]d\nGroups:\t%[3]s\n", os.Geteuid(), os.Getegid(), groups())
	if err := os.WriteFile(filepath.Join(proc, "42", "status"), []byte(status), 0o644); err != nil {
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

// groups is gwrap's supplementary groups as /proc/<pid>/status's Groups: line has them.
func groups() string {
	gs, _ := os.Getgroups()
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = fmt.Sprint(g)
	}
	return strings.Join(out, " ")
}

// fakeProc makes <proc>/42/root (dirs 0755) and <proc>/42/status for uid and gid.
func fakeProc(t *testing.T, uid, gid int, grps string) (proc, root string) {
	t.Helper()
	proc = t.TempDir()
	root = filepath.Join(proc, "42", "root")
	if err := os.MkdirAll(filepath.Join(root, "tmp", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(root, "tmp"), filepath.Join(root, "tmp", "x"), root} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	status := fmt.Sprintf("Uid:\t%[1]d\t%[1]d\t%[1]d\t%[1]d\nGid:\t%[2]d\t%[2]d\t%[2]d\t%[2]d\nGroups:\t%[3]s\n", uid, gid, grps)
	if err := os.WriteFile(filepath.Join(proc, "42", "status"), []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	return proc, root
}

// sourceWithin calls Source and fails the test when it takes more than a few seconds.
func sourceWithin(t *testing.T, h *Hook, f Frame) (string, error) {
	t.Helper()
	type res struct {
		s   string
		err error
	}
	c := make(chan res, 1)
	go func() { s, err := h.Source(42, f); c <- res{s, err} }()
	select {
	case r := <-c:
		return r.s, r.err
	case <-time.After(5 * time.Second):
		t.Fatalf("Source(%v) blocked", f)
		return "", nil
	}
}

// TestSourceOfHostileFrames: a frame's file name is the app's to choose. A FIFO, a socket, a
// device, a directory, a 10 GB sparse file, and names that try to leave the process's root
// (.., a symlink to an absolute path) all give ErrNoSource, at once.
func TestSourceOfHostileFrames(t *testing.T) {
	proc, root := fakeProc(t, os.Geteuid(), os.Getegid(), groups())
	h := &Hook{procRoot: proc}
	x := filepath.Join(root, "tmp", "x")
	outside := filepath.Join(t.TempDir(), "secret.py")
	if err := os.WriteFile(outside, []byte("SECRET = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(x, "fifo"), 0o666); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(x, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	big, err := os.Create(filepath.Join(x, "big.py"))
	if err != nil {
		t.Fatal(err)
	}
	if err := big.Truncate(10 << 30); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	big.Close()
	if err := os.Symlink(outside, filepath.Join(x, "link.py")); err != nil {
		t.Fatal(err)
	}
	frames := map[string]Frame{
		"FIFO":                   {"/tmp/x/fifo", 1, "<module>"},
		"socket":                 {"/tmp/x/sock", 1, "<module>"},
		"directory":              {"/tmp/x", 1, "<module>"},
		"10 GB sparse file":      {"/tmp/x/big.py", 1, "<module>"},
		"dot-dot out of root":    {"/../../../../../../.." + outside, 1, "<module>"},
		"symlink out of root":    {"/tmp/x/link.py", 1, "<module>"},
		"NUL in the name":        {"/tmp/x/a\x00b", 1, "<module>"},
		"name longer than paths": {"/" + strings.Repeat("a", 5000), 1, "<module>"},
	}
	if os.Geteuid() == 0 {
		if err := syscall.Mknod(filepath.Join(x, "zero"), syscall.S_IFCHR|0o666, int(unix.Mkdev(1, 5))); err != nil {
			t.Fatal(err)
		}
		frames["device"] = Frame{"/tmp/x/zero", 1, "<module>"}
	} else {
		testkit.Unavailable(t, "a device node needs root")
	}
	for name, f := range frames {
		t.Run(name, func(t *testing.T) {
			got, err := sourceWithin(t, h, f)
			if !errors.Is(err, ErrNoSource) {
				t.Errorf("Source = %q, %v; want ErrNoSource", got, err)
			}
		})
	}
}

// TestSourceReadsWithTheWorkersRights: a worker running as nobody names a file only root may
// read (its own root's /etc/shadow, say): gwrap quotes nothing from it; a file nobody may read
// is quoted.
func TestSourceReadsWithTheWorkersRights(t *testing.T) {
	testkit.RequireRoot(t)
	proc, root := fakeProc(t, 65534, 65534, "")
	h := &Hook{procRoot: proc}
	x := filepath.Join(root, "tmp", "x")
	if err := os.WriteFile(filepath.Join(x, "shadow"), []byte("root:$6$hash:19000::::::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(x, "app.py"), []byte("import time\ntime.sleep(600)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := sourceWithin(t, h, Frame{"/tmp/x/shadow", 1, "<module>"}); !errors.Is(err, ErrNoSource) || got != "" {
		t.Errorf("a root-only file was quoted for nobody: %q, %v", got, err)
	}
	if got, err := sourceWithin(t, h, Frame{"/tmp/x/app.py", 2, "<module>"}); err != nil || got != "time.sleep(600)" {
		t.Errorf("the worker's own source: %q, %v", got, err)
	}
}
