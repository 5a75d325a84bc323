package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/testkit"
)

// TestMain re-executes the test binary as fake children (Go's os/exec tests do the same): with
// GWRAP_HELPER set, the binary acts out that helper instead of running tests.
func TestMain(m *testing.M) {
	if h := os.Getenv("GWRAP_HELPER"); h != "" {
		helper(h, os.Args[1:])
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helper(name string, args []string) {
	switch name {
	case "exit":
		n, _ := strconv.Atoi(args[0])
		os.Exit(n)
	case "lines":
		// lines N SIZE: N lines of SIZE bytes each, numbered.
		n, _ := strconv.Atoi(args[0])
		size, _ := strconv.Atoi(args[1])
		w := bytesWriter()
		for i := 0; i < n; i++ {
			line := fmt.Sprintf("%d ", i)
			w.WriteString(line + strings.Repeat("x", max(0, size-len(line))) + "\n")
		}
		w.Flush()
	case "bytes":
		os.Stdout.Write([]byte("a\x00b\xff\xfe\n"))
		os.Stdout.Write([]byte("no newline at the end"))
	case "signals":
		// Report every signal received on stdout, until TERM.
		ch := make(chan os.Signal, 16)
		notify(ch, Forwarded...)
		fmt.Println("ready")
		for s := range ch {
			fmt.Println("got", unix.SignalName(s.(syscall.Signal)))
			if s == unix.SIGTERM {
				os.Exit(0)
			}
		}
	case "ignore-term":
		ignore(unix.SIGTERM)
		// A grandchild in the same group that ignores TERM too.
		cmd := exec.Command("/bin/sh", "-c", `trap "" TERM; echo $$ > "$0"; exec sleep 100`, args[0])
		_ = cmd.Start()
		fmt.Println("ready")
		time.Sleep(100 * time.Second)
	case "orphans":
		// Start N children, never wait for them, and exit after they did: their zombies are
		// orphaned to the supervisor, which must reap them.
		n, _ := strconv.Atoi(args[0])
		for i := 0; i < n; i++ {
			cmd := exec.Command("/bin/sh", "-c", "exit 0")
			_ = cmd.Start()
		}
		time.Sleep(300 * time.Millisecond)
		fmt.Println("started", n)
	case "daemon":
		// A grandchild keeps stdout open long after we exit.
		cmd := exec.Command("/bin/sleep", "30")
		cmd.Stdout = os.Stdout
		_ = cmd.Start()
		fmt.Println("bye")
	case "pid1":
		// Run the supervisor as PID 1 of a new namespace on the given command.
		res, err := Run(context.Background(), Config{Argv: args, StopBudget: 5 * time.Second,
			OnLine: func(s Stream, l []byte) { fmt.Printf("%s: %s\n", s, l) },
			OnReap: func(pid int, _ unix.WaitStatus) { fmt.Println("reaped", pid) }})
		fmt.Printf("result %d %v\n", res.ExitCode, err)
		os.Exit(res.ExitCode)
	}
}

// selfCmd is the argv of the test binary acting as the named helper.
func selfCmd(t *testing.T, name string, args ...string) ([]string, []string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{exe}, args...), append(os.Environ(), "GWRAP_HELPER="+name)
}

// collector gathers relayed lines; safe for the two relay goroutines.
type collector struct {
	mu    sync.Mutex
	lines map[Stream][]string
	ready chan string
}

func newCollector() *collector {
	return &collector{lines: map[Stream][]string{}, ready: make(chan string, 1024)}
}

func (c *collector) on(s Stream, l []byte) {
	c.mu.Lock()
	c.lines[s] = append(c.lines[s], string(l))
	c.mu.Unlock()
	select {
	case c.ready <- string(l):
	default:
	}
}

func (c *collector) get(s Stream) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines[s]...)
}

func (c *collector) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case l := <-c.ready:
			if l == want {
				return
			}
		case <-deadline:
			t.Fatalf("no line %q", want)
		}
	}
}

// TestForwardedSet: the runtime's preemption signal and SIGCHLD are never forwarded.
func TestForwardedSet(t *testing.T) {
	for _, s := range Forwarded {
		if s == unix.SIGURG || s == unix.SIGCHLD || s == unix.SIGKILL || s == unix.SIGSTOP {
			t.Errorf("%v must not be forwarded", s)
		}
	}
	if len(Forwarded) != 9 {
		t.Errorf("forwarded set %v, want TERM INT QUIT HUP TTIN TTOU USR1 USR2 WINCH", Forwarded)
	}
}

func TestExitCodeSweep(t *testing.T) {
	argv, env := selfCmd(t, "exit", "0")
	for code := 0; code <= 255; code++ {
		argv[1] = strconv.Itoa(code)
		res, err := Run(context.Background(), Config{Argv: argv, Env: env, StopBudget: time.Second})
		if err != nil || res.ExitCode != code {
			t.Fatalf("exit %d: got %d, %v", code, res.ExitCode, err)
		}
	}
}

func TestKilledBySignal(t *testing.T) {
	for _, sig := range []syscall.Signal{unix.SIGKILL, unix.SIGSEGV, unix.SIGTERM} {
		// A shell, not the Go helper: the Go runtime turns a SIGSEGV into a panic and exit 2.
		res, err := Run(context.Background(), Config{Argv: []string{"/bin/sh", "-c", fmt.Sprintf("kill -%d $$", int(sig))}, StopBudget: time.Second})
		if err != nil || res.ExitCode != 128+int(sig) || res.Signal != sig {
			t.Errorf("%v: %+v, %v", sig, res, err)
		}
		if !strings.Contains(res.Reason, unix.SignalName(sig)) {
			t.Errorf("reason %q does not name %v", res.Reason, sig)
		}
	}
}

func TestNotFoundAndNotExecutable(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		argv []string
		code int
		err  error
	}{
		{[]string{"gwrap-no-such-command"}, 127, ErrNotFound},
		{[]string{filepath.Join(dir, "missing")}, 127, ErrNotFound},
		{[]string{plain}, 126, ErrNotExecutable},
		{[]string{dir}, 126, ErrNotExecutable},
	} {
		res, err := Run(context.Background(), Config{Argv: tc.argv, StopBudget: time.Second})
		if res.ExitCode != tc.code || !errors.Is(err, tc.err) {
			t.Errorf("%v: code %d err %v, want %d %v", tc.argv, res.ExitCode, err, tc.code, tc.err)
		}
	}
}

// TestForwardsEverySignal sends each forwarded signal through the seam; the child reports each.
// BeforeStop is told of each stop signal (INT, QUIT, TERM) and only of those, before the child
// has it: a tenth of a second in BeforeStop is time enough for a child that already had it to
// say so.
func TestForwardsEverySignal(t *testing.T) {
	argv, env := selfCmd(t, "signals")
	sigs := make(chan os.Signal, 16)
	c := newCollector()
	var forwarded, before []os.Signal
	done := make(chan Result)
	go func() {
		res, _ := Run(context.Background(), Config{Argv: argv, Env: env, StopBudget: 5 * time.Second, Signals: sigs,
			OnLine: c.on, OnSignal: func(s os.Signal, ok bool) {
				if ok {
					forwarded = append(forwarded, s)
				}
			}, BeforeStop: func(s os.Signal) {
				before = append(before, s)
				time.Sleep(100 * time.Millisecond)
				if slices.Contains(c.get(StreamStdout), "got "+unix.SignalName(s.(syscall.Signal))) {
					t.Errorf("BeforeStop(%v) came after the child had the signal", s)
				}
			}})
		done <- res
	}()
	c.waitFor(t, "ready")
	order := []os.Signal{unix.SIGHUP, unix.SIGTTIN, unix.SIGTTOU, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH, unix.SIGINT, unix.SIGQUIT}
	for _, s := range order {
		sigs <- s
		c.waitFor(t, "got "+unix.SignalName(s.(syscall.Signal)))
	}
	sigs <- unix.SIGTERM
	res := <-done
	if res.ExitCode != 0 {
		t.Fatalf("exit %d", res.ExitCode)
	}
	if len(forwarded) != len(order)+1 {
		t.Errorf("forwarded %v", forwarded)
	}
	if want := []os.Signal{unix.SIGINT, unix.SIGQUIT, unix.SIGTERM}; !slices.Equal(before, want) {
		t.Errorf("BeforeStop told of %v, want %v", before, want)
	}
}

// TestStopBudget: a child and grandchild ignoring TERM are SIGKILLed as a group when the budget
// runs out.
func TestStopBudget(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "grandchild")
	argv, env := selfCmd(t, "ignore-term", pidFile)
	sigs := make(chan os.Signal, 4)
	c := newCollector()
	done := make(chan Result)
	go func() {
		res, _ := Run(context.Background(), Config{Argv: argv, Env: env, StopBudget: 500 * time.Millisecond, Signals: sigs, OnLine: c.on})
		done <- res
	}()
	c.waitFor(t, "ready")
	start := time.Now()
	sigs <- unix.SIGTERM
	res := <-done
	if res.ExitCode != 137 || !res.Forced {
		t.Fatalf("%+v, want 137 forced", res)
	}
	if took := time.Since(start); took < 500*time.Millisecond || took > 4*time.Second {
		t.Errorf("took %v with a 500ms budget", took)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	gc, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	// SIGKILL is delivered asynchronously: the grandchild must be gone or a zombie soon.
	deadline := time.Now().Add(3 * time.Second)
	for {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", gc))
		if err != nil || bytes.Contains(st, []byte(") Z")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived the group kill: %s", gc, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestContextCancelStops(t *testing.T) {
	argv, env := selfCmd(t, "signals")
	ctx, cancel := context.WithCancel(context.Background())
	c := newCollector()
	done := make(chan Result)
	go func() {
		res, _ := Run(ctx, Config{Argv: argv, Env: env, StopBudget: 5 * time.Second, Signals: make(chan os.Signal), OnLine: c.on})
		done <- res
	}()
	c.waitFor(t, "ready")
	cancel()
	if res := <-done; res.ExitCode != 0 {
		t.Fatalf("%+v", res)
	}
}

// TestReapsOrphans: grandchildren orphaned by the child are reaped by us (subreaper).
func TestReapsOrphans(t *testing.T) {
	argv, env := selfCmd(t, "orphans", "5")
	var mu sync.Mutex
	reaped := 0
	res, err := Run(context.Background(), Config{Argv: argv, Env: env, StopBudget: time.Second,
		OnReap: func(int, unix.WaitStatus) { mu.Lock(); reaped++; mu.Unlock() }})
	if err != nil || res.ExitCode != 0 {
		t.Fatal(res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if reaped < 5 {
		t.Errorf("reaped %d orphans, want 5", reaped)
	}
}

func TestRelayLongLinesBytesAndFlood(t *testing.T) {
	t.Run("1 MiB line whole", func(t *testing.T) {
		argv, env := selfCmd(t, "lines", "3", strconv.Itoa(1<<20))
		c := newCollector()
		if _, err := Run(context.Background(), Config{Argv: argv, Env: env, StopBudget: time.Second, OnLine: c.on}); err != nil {
			t.Fatal(err)
		}
		got := c.get(StreamStdout)
		if len(got) != 3 || len(got[1]) != 1<<20 || !strings.HasPrefix(got[1], "1 ") {
			t.Fatalf("got %d lines, second of %d bytes", len(got), len(got[min(1, len(got)-1)]))
		}
	})
	t.Run("bytes kept", func(t *testing.T) {
		argv, env := selfCmd(t, "bytes")
		c := newCollector()
		if _, err := Run(context.Background(), Config{Argv: argv, Env: env, StopBudget: time.Second, OnLine: c.on}); err != nil {
			t.Fatal(err)
		}
		got := c.get(StreamStdout)
		if len(got) != 2 || got[0] != "a\x00b\xff\xfe" || got[1] != "no newline at the end" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("a million lines in order", func(t *testing.T) {
		argv, env := selfCmd(t, "lines", "1000000", "40")
		next := 0
		bad := ""
		on := func(s Stream, l []byte) {
			want := strconv.Itoa(next) + " "
			if bad == "" && !bytes.HasPrefix(l, []byte(want)) {
				bad = fmt.Sprintf("line %d is %q", next, l)
			}
			next++
		}
		if _, err := Run(context.Background(), Config{Argv: argv, Env: env, StopBudget: time.Second, OnLine: on}); err != nil {
			t.Fatal(err)
		}
		if next != 1000000 || bad != "" {
			t.Fatalf("got %d lines; %s", next, bad)
		}
	})
	t.Run("pieces past MaxLine", func(t *testing.T) {
		argv, env := selfCmd(t, "lines", "1", strconv.Itoa(300<<10))
		var sizes []int
		if _, err := Run(context.Background(), Config{Argv: argv, Env: env, StopBudget: time.Second, MaxLine: 128 << 10,
			OnLine: func(_ Stream, l []byte) { sizes = append(sizes, len(l)) }}); err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, s := range sizes {
			total += s
		}
		if total != 300<<10 || len(sizes) < 3 {
			t.Fatalf("pieces %v", sizes)
		}
	})
}

// TestDrainIsBounded: a grandchild keeping stdout open does not hold Run forever.
func TestDrainIsBounded(t *testing.T) {
	argv, env := selfCmd(t, "daemon")
	start := time.Now()
	res, err := Run(context.Background(), Config{Argv: argv, Env: env, StopBudget: time.Second, Drain: 300 * time.Millisecond})
	if err != nil || res.ExitCode != 0 {
		t.Fatal(res, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Run took %v", took)
	}
}

// TestPID1 runs the supervisor as PID 1 of a new PID namespace: a TERM from outside is handled and
// forwarded, orphans are reaped, the exit code is the child's.
func TestPID1(t *testing.T) {
	testkit.RequireRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		testkit.Unavailable(t, "unshare not installed")
	}
	exe, _ := os.Executable()
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", exe, "/bin/sh", "-c",
		`for i in 1 2 3; do (sleep 0.1 &); done; trap 'echo term; exit 7' TERM; echo ready; while :; do sleep 0.05; done`)
	cmd.Env = append(os.Environ(), "GWRAP_HELPER=pid1")
	var out lockedBuffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "ready") || strings.Count(out.String(), "reaped") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no ready/3 reaps:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// unshare's child is our supervisor, PID 1 inside.
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	sup, _ := strconv.Atoi(strings.Fields(string(kids))[0])
	if err := unix.Kill(sup, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if cmd.ProcessState.ExitCode() != 7 {
		t.Fatalf("exit %d (%v), want 7:\n%s", cmd.ProcessState.ExitCode(), err, out.String())
	}
	if !strings.Contains(out.String(), "stdout: term") {
		t.Errorf("the child did not get TERM:\n%s", out.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }
