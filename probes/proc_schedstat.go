package probes

import (
	"bytes"
	"fmt"
)

// parseSchedstat reads /proc/<pid>/schedstat: "run_ns wait_ns timeslices"; it returns wait_ns,
// the time spent runnable but waiting for a CPU.
func parseSchedstat(b []byte) (uint64, error) {
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, fmt.Errorf("schedstat: %w", errFormat)
	}
	return atou(f[1]), nil
}
