package termlog

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/testkit"
)

var t0 = time.Date(2026, 11, 25, 3, 42, 0, 0, time.UTC)

// ranking is a ranking as gwrap hands it (postmortem.CauseNames).
var ranking = Ranking{"oom_killed", "memory_pressure", "boot_timeout", "cpu_starved", "cpu_bound", "blocked", "crashed", "unknown"}

func TestBuildOrderAndCounts(t *testing.T) {
	r := NewRecent(3, ranking)
	r.Add(Verdict{At: t0, PID: 10, Cause: "blocked", Summary: "dropped: only the last 3 are kept"})
	r.Add(Verdict{At: t0.Add(time.Minute), PID: 11, Cause: "blocked", Summary: "waited on tcp 10.0.0.5:5432 for 31 s"})
	r.Add(Verdict{At: t0.Add(2 * time.Minute), PID: 12, Cause: "oom_killed", Summary: "the kernel OOM killer\nkilled it at 498 MiB of 512 MiB"})
	r.Add(Verdict{At: t0.Add(3 * time.Minute), PID: 13, Cause: "blocked", Summary: "slept 31 s"})
	got := string(r.Build("gunicorn exited with code 0 after SIGTERM"))
	want := `gwrap: gunicorn exited with code 0 after SIGTERM
workers killed: 1 oom_killed, 3 blocked
2026-11-25T03:44:00Z oom_killed pid 12: the kernel OOM killer killed it at 498 MiB of 512 MiB
2026-11-25T03:45:00Z blocked pid 13: slept 31 s
2026-11-25T03:43:00Z blocked pid 11: waited on tcp 10.0.0.5:5432 for 31 s
`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if got := string(ranking.Build("no verdicts", nil, nil)); got != "gwrap: no verdicts\n" {
		t.Errorf("%q", got)
	}
}

func TestBuildFitsInOneKiB(t *testing.T) {
	r := NewRecent(50, ranking)
	long := strings.Repeat("é waited on a lock; ", 40) // multi-byte runes across every cut
	for i := range 50 {
		r.Add(Verdict{At: t0.Add(time.Duration(i) * time.Second), PID: 100 + i, Cause: ranking[i%8], Summary: long})
	}
	for _, reason := range []string{"exit 0", strings.Repeat("ü", 2000)} {
		b := r.Build(reason)
		if len(b) > MaxBytes || !utf8.Valid(b) || !strings.HasPrefix(string(b), "gwrap: ") || b[len(b)-1] != '\n' {
			t.Errorf("%d bytes, valid %v:\n%s", len(b), utf8.Valid(b), b)
		}
		if reason == "exit 0" && !strings.Contains(string(b), "oom_killed pid 148") {
			t.Errorf("the latest OOM kill is not first:\n%s", b)
		}
	}
}

// TestUnrankedCauseComesLast: a cause the ranking does not list is said after the others.
func TestUnrankedCauseComesLast(t *testing.T) {
	r := NewRecent(3, ranking)
	r.Add(Verdict{At: t0, PID: 10, Cause: "something_new", Summary: "a"})
	r.Add(Verdict{At: t0, PID: 11, Cause: "unknown", Summary: "b"})
	got := string(r.Build("exit"))
	want := "gwrap: exit\nworkers killed: 1 unknown, 1 something_new\n2026-11-25T03:42:00Z unknown pid 11: b\n2026-11-25T03:42:00Z something_new pid 10: a\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteTruncatesInPlace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(p, []byte(strings.Repeat("old content ", 200)), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(p)
	if err := Write(p, []byte("gwrap: exit 0\n"), time.Second); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(p)
	if b, _ := os.ReadFile(p); string(b) != "gwrap: exit 0\n" {
		t.Errorf("%q", b)
	}
	if !os.SameFile(before, after) {
		t.Error("the file was replaced, not written in place")
	}
}

// TestWriteBindMount reproduces Kubernetes' mount: a file bind-mounted on another. A rename
// onto it fails; Write's in-place write lands in the mounted file.
func TestWriteBindMount(t *testing.T) {
	testkit.RequireRoot(t)
	dir := t.TempDir()
	host, target := filepath.Join(dir, "host-file"), filepath.Join(dir, "termination-log")
	for _, p := range []string{host, target} {
		if err := os.WriteFile(p, []byte("previous run's much longer message\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount(host, target, "", unix.MS_BIND, ""); err != nil {
		testkit.Unavailable(t, "bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	tmp := filepath.Join(dir, "tmp")
	os.WriteFile(tmp, []byte("x"), 0o644)
	if err := os.Rename(tmp, target); err == nil {
		t.Fatal("rename onto a bind mount succeeded: the test does not reproduce Kubernetes' mount")
	}
	if err := Write(target, []byte("gwrap: killed by SIGTERM\n"), time.Second); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(host); string(b) != "gwrap: killed by SIGTERM\n" {
		t.Errorf("host side holds %q", b)
	}
}

func TestWriteFIFONeverHangs(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fifo")
	if err := unix.Mkfifo(p, 0o644); err != nil {
		t.Fatal(err)
	}
	// No reader: a blocking open would wait forever; the non-blocking one fails at once (ENXIO).
	if err := Write(p, []byte("x"), 10*time.Second); err == nil || errors.Is(err, ErrTimeout) {
		t.Errorf("FIFO without reader: %v", err)
	}
	// With a reader: refused as not a regular file, nothing written.
	rd, err := os.OpenFile(p, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if err := Write(p, []byte("x"), 10*time.Second); !errors.Is(err, ErrNotRegular) {
		t.Errorf("FIFO with reader: %v", err)
	}
	buf := make([]byte, 8)
	if n, _ := rd.Read(buf); n != 0 {
		t.Errorf("the FIFO received %q", buf[:n])
	}
}

func TestWriteUnwritable(t *testing.T) {
	if err := Write(filepath.Join(t.TempDir(), "no", "such", "dir"), []byte("x"), time.Second); err == nil {
		t.Error("no error for a missing directory")
	}
	if err := Write(t.TempDir(), []byte("x"), time.Second); err == nil {
		t.Error("no error for a directory")
	}
}
