package supervisor

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDrainCutsAHolderOutsideTheGroup: a process the child started in its own session (an app's
// setsid daemon) keeps the output pipes open; Run still returns soon after the drain deadline,
// with the child's code, and says it cut the drain.
func TestDrainCutsAHolderOutsideTheGroup(t *testing.T) {
	c := newCollector()
	start := time.Now()
	drain := 300 * time.Millisecond
	res, err := Run(context.Background(), Config{Argv: []string{"/bin/sh", "-c", `setsid sleep 20 & echo $!; exit 3`},
		StopBudget: time.Second, Drain: drain, OnLine: c.on})
	took := time.Since(start)
	if lines := c.get(StreamStdout); len(lines) == 1 {
		if pid, err := strconv.Atoi(lines[0]); err == nil {
			t.Cleanup(func() { _ = unix.Kill(pid, unix.SIGKILL) })
		}
	}
	if err != nil || res.ExitCode != 3 || !res.DrainCut {
		t.Fatalf("result %+v, %v; want exit 3 and the drain cut", res, err)
	}
	t.Logf("Run returned %v after start with a %v drain (bound: drain + %v)", took, drain, drainGrace)
	if took > drain+drainGrace+2*time.Second {
		t.Errorf("Run took %v with a %v drain", took, drain)
	}
}

// TestStoppedChildIsReported: a SIGSTOPped child is said once (not at every reap), and its
// continuing once.
func TestStoppedChildIsReported(t *testing.T) {
	type stop struct {
		stopped bool
		sig     syscall.Signal
	}
	stops := make(chan stop, 16)
	started := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = Run(ctx, Config{Argv: []string{"/bin/sleep", "30"}, StopBudget: time.Second,
			OnStart: func(pid int) { started <- pid },
			OnStop:  func(_ int, stopped bool, sig syscall.Signal) { stops <- stop{stopped, sig} }})
	}()
	defer func() { cancel(); <-done }()
	pid := <-started
	next := func() stop {
		select {
		case s := <-stops:
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("no stop/continue reported")
			return stop{}
		}
	}
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if s := next(); !s.stopped || s.sig != unix.SIGSTOP {
		t.Fatalf("first report %+v, want stopped by SIGSTOP", s)
	}
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if s := next(); s.stopped {
		t.Fatalf("a stopped child reported twice")
	}
}

// TestParentDeathSignal: a supervisor (not PID 1) that is SIGKILLed does not leave its child
// running unsupervised: the child gets ParentDeath.
func TestParentDeathSignal(t *testing.T) {
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "/bin/sh", "-c", `echo $$; exec sleep 60`)
	cmd.Env = append(os.Environ(), "GWRAP_HELPER=pid1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var line string
	if _, err := fmt.Fscanf(out, "stdout: %s\n", &line); err != nil {
		t.Fatal(err)
	}
	child, err := strconv.Atoi(line)
	if err != nil {
		t.Fatal(line, err)
	}
	t.Cleanup(func() { _ = unix.Kill(child, unix.SIGKILL) })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d still runs 10 s after its supervisor was SIGKILLed", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("child gone %v after its supervisor was SIGKILLed", time.Since(start))
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestRelayGivesBackAGiantLine: after one line far longer than any other, the relay does not
// keep a buffer of its size while it waits for the next line.
func TestRelayGivesBackAGiantLine(t *testing.T) {
	r, w := io.Pipe()
	delivered := make(chan int, 64)
	go relay(r, StreamStdout, 4<<20, func(_ Stream, l []byte) { delivered <- len(l) })
	go func() {
		chunk := make([]byte, 64<<10)
		for i := range chunk {
			chunk[i] = 'x'
		}
		for i := 0; i < 160; i++ { // 10 MiB
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		_, _ = w.Write([]byte("\n"))
	}()
	total := 0
	for total < 10<<20 {
		select {
		case n := <-delivered:
			total += n
		case <-time.After(20 * time.Second):
			t.Fatalf("%d bytes delivered", total)
		}
	}
	// The relay now waits in Read for the next line.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.Close()
	t.Logf("heap in use after a 10 MiB line: %d KiB", ms.HeapInuse>>10)
	if ms.HeapInuse > 3<<20 {
		t.Errorf("heap in use %d KiB after the line was delivered: the relay keeps its buffer", ms.HeapInuse>>10)
	}
}

// TestSubreaperFailureIsSaid: gwrap, not PID 1, that cannot become a child subreaper says so
// once, with a code, as tini does; the child still runs.
func TestSubreaperFailureIsSaid(t *testing.T) {
	if os.Getpid() == 1 {
		t.Skip("PID 1 needs no subreaper")
	}
	var said []string
	res, err := Run(context.Background(), Config{Argv: []string{"/bin/true"}, StopBudget: time.Second,
		Subreaper: func() error { return unix.EINVAL },
		Warn:      func(code, msg string) { said = append(said, code+": "+msg) }})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("run: %v %+v", err, res)
	}
	if len(said) != 1 || !strings.HasPrefix(said[0], "subreaper: ") || !strings.Contains(said[0], "invalid argument") {
		t.Errorf("said %q, want one subreaper warning naming the error", said)
	}
}
