package testkit

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SlowDir mounts a FUSE file system (slowfs.py, on Debian's python3-fuse) whose every change —
// create, write, fsync, rename, unlink, truncate, mkdir — takes delay, and returns its mount
// point: a stand-in for a report dir on a share that stalls (App Service's /home is SMB).
// Lookups and reads stay fast. t.Cleanup unmounts it, lazily: a write still sleeping in it
// does not hold the cleanup up.
func SlowDir(t testing.TB, delay time.Duration) string {
	t.Helper()
	RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		Unavailable(t, "no /dev/fuse: %v", err)
	}
	fusermount, err := exec.LookPath("fusermount")
	if err != nil {
		Unavailable(t, "fusermount is not installed (apt-get install python3-fuse)")
	}
	python := Python(t)
	if err := exec.Command(python, "-c", "import fuse").Run(); err != nil {
		Unavailable(t, "python3-fuse is not installed (apt-get install python3-fuse): %v", err)
	}
	backing, mnt := t.TempDir(), t.TempDir()
	cmd := exec.Command(python, filepath.Join(filepath.Dir(appsDir), "slowfs.py"), mnt, "-f",
		"-o", fmt.Sprintf("backing=%s,delay=%g", backing, delay.Seconds()))
	var stderr Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("slowfs: %v", err)
	}
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		_ = exec.Command(fusermount, "-u", "-z", mnt).Run()
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !mounted(mnt) {
		select {
		case <-waited:
			t.Fatalf("slowfs exited before mounting: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("slowfs did not mount %s within 10 s: %s", mnt, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return mnt
}

// mounted reports whether a file system is mounted at dir (/proc/self/mountinfo, field 5).
func mounted(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}
