package pread

import (
	"os"
	"strings"
	"testing"

	"github.com/gwrap/gwrap/internal/testkit"
)

// TestWhole: a /proc file is read whole into a buffer that fits, and into one too small (grown).
func TestWhole(t *testing.T) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		testkit.Unavailable(t, "no /proc: %v", err)
	}
	defer f.Close()
	for _, size := range []int{4096, 16} {
		b, err := Whole(int(f.Fd()), make([]byte, size))
		if err != nil {
			t.Fatal(err)
		}
		if s := string(b); !strings.HasPrefix(s, "Name:") || !strings.Contains(s, "\nVmRSS:") || !strings.HasSuffix(s, "\n") {
			t.Errorf("buffer of %d: read %q", size, s)
		}
	}
}
