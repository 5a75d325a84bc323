package supervisor

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestChildOOMScoreAdjRaised: the child (and so every worker the master forks) is a likelier OOM
// victim than gwrap by the delta asked.
func TestChildOOMScoreAdjRaised(t *testing.T) {
	own, err := readOOMScoreAdj("/proc/self/oom_score_adj")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	_, err = Run(context.Background(), Config{Argv: []string{"/bin/sh", "-c", "sleep 0.3"}, ChildOOMScoreAdj: 500,
		OnStart: func(pid int) {
			v, err := readOOMScoreAdj(filepath.Join("/proc", strconv.Itoa(pid), "oom_score_adj"))
			if err != nil {
				t.Error(err)
			}
			got <- v
		}, StopBudget: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if v := <-got; v != min(1000, own+500) {
		t.Errorf("child oom_score_adj %d, want %d (gwrap's %d + 500)", v, min(1000, own+500), own)
	}
}

func TestRaiseOOMScoreAdjNeverLowers(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"self", "42"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "self", "oom_score_adj"), []byte("0\n"), 0o644)
	os.WriteFile(filepath.Join(root, "42", "oom_score_adj"), []byte("900\n"), 0o644)
	if err := raiseOOMScoreAdj(root, 42, 500); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "42", "oom_score_adj")); strings.TrimSpace(string(b)) != "900" {
		t.Errorf("lowered to %q", b)
	}
	os.WriteFile(filepath.Join(root, "self", "oom_score_adj"), []byte("-998\n"), 0o644)
	os.WriteFile(filepath.Join(root, "42", "oom_score_adj"), []byte("-998\n"), 0o644)
	if err := raiseOOMScoreAdj(root, 42, 500); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "42", "oom_score_adj")); strings.TrimSpace(string(b)) != "-498" {
		t.Errorf("raised to %q, want -498", b)
	}
}
