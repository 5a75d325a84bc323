package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// raiseOOMScoreAdj sets pid's oom_score_adj to gwrap's own plus delta (at most 1000, and never
// lower than the child's current value: lowering needs CAP_SYS_RESOURCE, raising does not).
func raiseOOMScoreAdj(procRoot string, pid, delta int) error {
	if procRoot == "" {
		procRoot = "/proc"
	}
	own, err := readOOMScoreAdj(filepath.Join(procRoot, "self", "oom_score_adj"))
	if err != nil {
		return err
	}
	path := filepath.Join(procRoot, strconv.Itoa(pid), "oom_score_adj")
	cur, err := readOOMScoreAdj(path)
	if err != nil {
		return err
	}
	want := min(1000, own+delta)
	if want <= cur {
		return nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(want)), 0); err != nil {
		return fmt.Errorf("raising the oom_score_adj of %d: %w", pid, err)
	}
	return nil
}

func readOOMScoreAdj(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}
