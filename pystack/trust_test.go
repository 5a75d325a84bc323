package pystack

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// dropApp is what a Gunicorn worker with --user is: hooked while root, then running as nobody.
// As nobody it tries to write into gwrap's private directory (the stack dir, a file there named
// for another pid, the sitecustomize gwrap injects) and forks a child that catches the stack
// signal itself, hoping gwrap will signal it. It prints what it got, then relays its child's words.
const dropApp = `
import json, os, signal, sys, time
stacks = sys.argv[1]
os.setgroups([]); os.setgid(65534); os.setuid(65534)
tries = {}
for p in (os.path.join(stacks, "99999.stack"), os.path.join(stacks, "evil"),
          os.path.join(os.path.dirname(stacks), "sitecustomize.py"), os.path.dirname(stacks)):
    try:
        if os.path.isdir(p):
            os.mkdir(os.path.join(p, "evil"))
        else:
            open(p, "a").close()
        tries[p] = "written"
    except PermissionError:
        tries[p] = "denied"
r, w = os.pipe()
child = os.fork()
if child == 0:
    signal.signal(60, lambda *a: os.write(w, b"signalled\n"))
    signal.signal(signal.SIGUSR1, lambda *a: os.write(w, b"usr1\n"))
    os.write(w, b"ready\n")
    while True:
        time.sleep(60)
print(json.dumps({"child": child, "tries": tries}), flush=True)
while True:
    sys.stdout.write(os.read(r, 100).decode()); sys.stdout.flush()
`

// TestAppAsAnotherUserCannotReachGwrap: what is sound stays sound. An app running as another user
// cannot write into gwrap's private directory, and cannot make gwrap send the stack signal to a
// process that is not a prepared worker (its own child, which catches that signal but holds no
// stack file of its own); the prepared worker itself still gives its stack.
func TestAppAsAnotherUserCannotReachGwrap(t *testing.T) {
	testkit.RequireRoot(t)
	// Under a sticky world-writable parent, as /tmp is: any denial then comes from the modes of
	// gwrap's own directories, not from the test's temp dir.
	parent, err := os.MkdirTemp("", "gwrap-trust-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o1777); err != nil {
		t.Fatal(err)
	}
	h, err := Install(Options{Parent: parent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	for _, d := range []string{h.PathDir(), h.StackDir()} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: %v, want mode 0700", d, st.Mode())
		}
	}
	cmd := exec.Command(testkit.Python(t), "-c", dropApp, h.StackDir())
	cmd.Env = h.Env(os.Environ())
	cmd.Dir = parent
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(out)
	var report struct {
		Child int               `json:"child"`
		Tries map[string]string `json:"tries"`
	}
	if !lines.Scan() || json.Unmarshal(lines.Bytes(), &report) != nil {
		t.Fatalf("the app said %q", lines.Text())
	}
	t.Cleanup(func() { _ = syscall.Kill(report.Child, syscall.SIGKILL) })
	for p, got := range report.Tries {
		if got != "denied" {
			t.Errorf("as nobody the app %s %s", got, p)
		}
	}
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("the child said %q", lines.Text())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = h.Take(ctx, report.Child)
	if !errors.Is(err, ErrNoHook) {
		t.Errorf("Take(the app's child) = %v, want ErrNoHook (and no signal)", err)
	}
	// The prepared worker (hooked before it dropped to nobody) still answers: its stack comes
	// back, which also means any signal to the child would have been handled by now.
	st, err := h.Take(ctx, cmd.Process.Pid)
	if err != nil || len(st.Threads) == 0 {
		t.Errorf("Take(the prepared worker) = %v", err)
	}
	// Then the child is asked to speak (SIGUSR1): had it been sent the stack signal, it would
	// have said so first.
	if err := syscall.Kill(report.Child, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	for lines.Scan() {
		if lines.Text() == "signalled" {
			t.Errorf("gwrap signalled a process that is not a prepared worker")
		}
		if lines.Text() == "usr1" {
			break
		}
	}
}
