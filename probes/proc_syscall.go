package probes

import (
	"runtime"
	"strings"
)

// syscallNames are x86-64 numbers of the calls a stuck worker is usually in.
var syscallNames = map[string]string{"0": "read", "1": "write", "7": "poll", "23": "select", "35": "nanosleep",
	"42": "connect", "43": "accept", "44": "sendto", "45": "recvfrom", "47": "recvmsg", "61": "wait4",
	"202": "futex", "230": "clock_nanosleep", "232": "epoll_wait", "270": "pselect6", "271": "ppoll",
	"281": "epoll_pwait", "288": "accept4", "17": "pread64", "74": "fsync", "75": "fdatasync"}

// parseSyscall reads /proc/<pid>/syscall: "running", or the number and its arguments.
func parseSyscall(b []byte) string {
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	if f[0] == "running" || f[0] == "-1" {
		return f[0]
	}
	if n, ok := syscallNames[f[0]]; ok && runtime.GOARCH == "amd64" {
		return n
	}
	return "syscall " + f[0]
}
