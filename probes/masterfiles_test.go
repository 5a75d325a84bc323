package probes

import (
	"errors"
	"io/fs"
	"os/exec"
	"testing"
)

// TestStatCacheFollowsTheProcess: a cached stat file reads its process while it lives, fails
// once it is reaped (the pid is then opened afresh, and is gone), and keep closes what is not
// a child any more.
func TestStatCacheFollowsTheProcess(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := NewFS("/proc")
	pid := cmd.Process.Pid
	want, err := f.ID(pid)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second read goes through the open file
		if got, err := f.childID(pid); err != nil || got != want {
			t.Fatalf("childID %v %v, want %v", got, err, want)
		}
	}
	if len(f.stats.open) != 1 {
		t.Fatalf("cache holds %d files", len(f.stats.open))
	}
	cmd.Process.Kill()
	cmd.Wait()
	if _, err := f.childID(pid); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("reaped process: %v", err)
	}
	if len(f.stats.open) != 0 {
		t.Errorf("cache still holds %d files", len(f.stats.open))
	}
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	if _, err := f.childID(other.Process.Pid); err != nil {
		t.Fatal(err)
	}
	f.stats.keep(nil)
	if len(f.stats.open) != 0 {
		t.Errorf("keep(nil) left %d files open", len(f.stats.open))
	}
}
