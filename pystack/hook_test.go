package pystack

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

func TestEnv(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
	}{
		{[]string{"HOME=/root", "PATH=/bin"}, []string{"HOME=/root", "PATH=/bin", "PYTHONPATH=/h", "GWRAP_STACK_DIR=/h/stacks", "GWRAP_STACK_SIGNAL=60"}},
		{[]string{"PYTHONPATH=/app:/lib", "GWRAP_STACK_DIR=/old", "X=a=b"}, []string{"X=a=b", "PYTHONPATH=/h:/app:/lib", "GWRAP_STACK_DIR=/h/stacks", "GWRAP_STACK_SIGNAL=60"}},
		{[]string{"PYTHONPATH="}, []string{"PYTHONPATH=/h", "GWRAP_STACK_DIR=/h/stacks", "GWRAP_STACK_SIGNAL=60"}},
	} {
		if got := withHookEnv(tc.in, "/h", "/h/stacks", 60); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("withHookEnv(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestInstallAndClose(t *testing.T) {
	h, err := Install(Options{Parent: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(h.PathDir())
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("private dir %v %v", fi, err)
	}
	b, err := os.ReadFile(filepath.Join(h.PathDir(), "sitecustomize.py"))
	if err != nil || !bytes.Equal(b, sitecustomize) {
		t.Fatalf("hook not written: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(h.PathDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Close left %s", h.PathDir())
	}
	// A parent reached through a symlink: the hook's paths are the real ones, as /proc shows them.
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "tmp")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	h2, err := Install(Options{Parent: link})
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if filepath.Dir(h2.PathDir()) != real {
		t.Errorf("PathDir %s, want it under %s", h2.PathDir(), real)
	}
	if _, err := Install(Options{Parent: t.TempDir(), Signal: syscall.SIGUSR1}); err == nil {
		t.Errorf("Install accepted SIGUSR1")
	}
}

// python runs Debian's python3 with env and returns its stdout.
func python(t *testing.T, env []string, code string) string {
	t.Helper()
	cmd := exec.Command(testkit.Python(t), "-c", code)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("python wrote to stderr: %s", stderr.String())
	}
	return string(out)
}

// TestHookKeepsDebianSitecustomize: the injected sitecustomize loads the one it shadows and
// leaves sys.path as it would have been.
func TestHookKeepsDebianSitecustomize(t *testing.T) {
	if _, err := os.Stat("/usr/lib/python3.11/sitecustomize.py"); err != nil {
		testkit.Unavailable(t, "Debian's python3.11 sitecustomize: %v", err)
	}
	h := newHook(t)
	code := "import os, sys, sitecustomize, faulthandler; print(sitecustomize.__file__); print(sys.path); print(faulthandler.is_enabled()); " +
		"print(sorted(k + '=' + v for k, v in os.environ.items()))"
	with := strings.Split(python(t, h.Env(os.Environ()), code), "\n")
	without := strings.Split(python(t, os.Environ(), code), "\n")
	if with[0] != "/usr/lib/python3.11/sitecustomize.py" || with[0] != without[0] {
		t.Errorf("sitecustomize with the hook %q, without %q", with[0], without[0])
	}
	if with[1] != without[1] {
		t.Errorf("sys.path with the hook %s\nwithout %s", with[1], without[1])
	}
	if with[3] != without[3] {
		t.Errorf("os.environ with the hook %s\nwithout %s", with[3], without[3])
	}
	withPP := strings.Split(python(t, h.Env(append(os.Environ(), "PYTHONPATH=/x:/y")), code), "\n")
	if !strings.Contains(withPP[3], "'PYTHONPATH=/x:/y'") || strings.Contains(withPP[3], "GWRAP_STACK") {
		t.Errorf("os.environ with the user's PYTHONPATH: %s", withPP[3])
	}
	if with[2] != "True" || without[2] != "False" {
		t.Errorf("faulthandler enabled with/without the hook: %s/%s", with[2], without[2])
	}
	// PYTHONPATH alone (gwrap gone, variables not passed on): nothing happens, nothing is written.
	env := append(os.Environ(), "PYTHONPATH="+h.PathDir())
	if got := strings.Split(python(t, env, code), "\n"); got[2] != "False" || got[0] != without[0] {
		t.Errorf("without GWRAP_STACK_*: %q", got)
	}
	if ents, _ := os.ReadDir(h.StackDir()); len(ents) != 2 { // the hooked runs' own <pid>.stack
		t.Errorf("stack dir holds %d files, want 2", len(ents))
	}
}

// TestHookCrashOutput: a crash dump goes to the process's own file, not to stderr; unless the user
// asked for faulthandler (PYTHONFAULTHANDLER), whose stderr output then stays as it was.
func TestHookCrashOutput(t *testing.T) {
	h := newHook(t)
	crash := func(env []string) (stderr string, pid int) {
		cmd := exec.Command(testkit.Python(t), "-c", "import ctypes; ctypes.string_at(0)")
		cmd.Env = env
		var b bytes.Buffer
		cmd.Stderr = &b
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGSEGV {
			t.Fatalf("want death by SIGSEGV, got %v", err)
		}
		return b.String(), cmd.Process.Pid
	}
	stderr, pid := crash(h.Env(os.Environ()))
	if stderr != "" {
		t.Errorf("stderr with the hook: %q", stderr)
	}
	st, ok := h.Crash(pid)
	if !ok || st.Fatal != "Segmentation fault" || len(st.Threads) != 1 {
		t.Fatalf("Crash(%d) = %+v, %v", pid, st, ok)
	}
	if fr := st.Threads[0].Frames; fr[len(fr)-1].Func != "string_at" || fr[0] != (Frame{"<string>", 1, "<module>"}) {
		t.Errorf("frames %+v", fr)
	}
	stderr, pid = crash(append(h.Env(os.Environ()), "PYTHONFAULTHANDLER=1"))
	if !strings.HasPrefix(stderr, "Fatal Python error: Segmentation fault") {
		t.Errorf("PYTHONFAULTHANDLER's stderr: %q", stderr)
	}
	if _, ok := h.Crash(pid); ok {
		t.Errorf("the hook took the user's crash dump")
	}
}

// TestTakeRefusesWithoutHook: a process without the hook is never signalled (a real-time
// signal's default action would kill it), and the reason is given.
func TestTakeRefusesWithoutHook(t *testing.T) {
	h := newHook(t)
	start := func(argv []string, env []string) *exec.Cmd {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = env
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	py := testkit.Python(t)
	sleeper := start([]string{"/bin/sleep", "60"}, h.Env(os.Environ()))
	_, err := h.Take(context.Background(), sleeper.Process.Pid)
	if !errors.Is(err, ErrNoHook) {
		t.Errorf("non-Python command: %v", err)
	}
	isolated := start([]string{py, "-I", "-c", "import time; time.sleep(60)"}, h.Env(os.Environ()))
	_, err = h.Take(context.Background(), isolated.Process.Pid)
	if !errors.Is(err, ErrNoHook) {
		t.Errorf("python -I: %v", err)
	}
	// The hook itself says why: here a signal that is not real-time.
	badSig := start([]string{py, "-c", "import time; time.sleep(60)"}, withHookEnv(os.Environ(), h.PathDir(), h.StackDir(), syscall.SIGUSR1))
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = h.Take(context.Background(), badSig.Process.Pid)
		if errors.Is(err, ErrNoHook) && strings.Contains(err.Error(), "not a real-time signal") || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the interpreter is still starting: polling with a deadline
	}
	if !strings.Contains(fmtErr(err), "signal 10 is not a real-time signal") {
		t.Errorf("bad signal: %v", err)
	}
	// A stale <pid>.stack of an earlier process with the same pid does not count.
	stale := start([]string{"/bin/sleep", "60"}, os.Environ())
	if err := os.WriteFile(h.stackFile(stale.Process.Pid), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Take(context.Background(), stale.Process.Pid); !errors.Is(err, ErrNoHook) && !errors.Is(err, ErrNotCaught) {
		t.Errorf("stale file: %v", err)
	}
	for _, c := range []*exec.Cmd{sleeper, isolated, badSig, stale} {
		if err := syscall.Kill(c.Process.Pid, 0); err != nil {
			t.Errorf("%v was harmed: %v", c.Args, err)
		}
	}
	if _, err := h.Take(context.Background(), 1<<22+7); !errors.Is(err, ErrGone) {
		t.Errorf("no such pid: %v", err)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestPrune(t *testing.T) {
	proc := t.TempDir()
	h, err := Install(Options{Parent: t.TempDir(), ProcRoot: proc})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	old := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, f := range []string{"10.stack", "10.err", "10.settings", "11.stack", "12.stack", "notes.txt"} {
		p := filepath.Join(h.StackDir(), f)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if f != "12.stack" {
			os.Chtimes(p, old, old)
		}
	}
	if err := os.Mkdir(filepath.Join(proc, "11"), 0o755); err != nil { // 11 is alive
		t.Fatal(err)
	}
	// 10 is gone and old: forgotten (both files); 11 lives; 12 is gone but fresh (a crash dump
	// the engine has not read yet); notes.txt is not a process's.
	if n := h.Prune(old.Add(time.Hour), time.Minute); n != 1 {
		t.Errorf("Prune = %d", n)
	}
	var left []string
	ents, _ := os.ReadDir(h.StackDir())
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if !reflect.DeepEqual(left, []string{"11.stack", "12.stack", "notes.txt"}) {
		t.Errorf("left %v", left)
	}
}
