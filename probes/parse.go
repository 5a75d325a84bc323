package probes

import "errors"

// The readers of /proc read one file each and hand its bytes to that file's parser, in a file
// named after it as prometheus/procfs names them: proc_stat.go (/proc/<pid>/stat),
// proc_status.go, proc_schedstat.go, proc_smaps_rollup.go, proc_syscall.go, net_tcp.go
// (/proc/<pid>/net/tcp, tcp6, udp, udp6), net_unix.go. What they share is here.

// errFormat marks a file whose content is not what the kernel writes.
var errFormat = errors.New("unexpected format")

// atou parses a decimal without allocating; garbage gives 0.
func atou(b []byte) uint64 {
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return n
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}
