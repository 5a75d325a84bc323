package probes

import (
	"bytes"
	"strconv"
	"strings"
)

// parseNetUnix reads /proc/<pid>/net/unix: "Num RefCount Protocol Flags Type St Inode Path".
// A socket with __SO_ACCEPTCON in its flags is listening. An accepted server-side socket shows
// its listener's path.
func parseNetUnix(b []byte, want map[uint64]bool) []Socket {
	var out []Socket
	lines := bytes.Split(b, []byte{'\n'})
	for _, line := range lines[min(1, len(lines)):] {
		f := strings.Fields(string(line))
		if len(f) < 7 {
			continue
		}
		inode, err := strconv.ParseUint(f[6], 10, 64)
		if err != nil || !want[inode] {
			continue
		}
		s := Socket{Proto: "unix", Type: unixType(f[4]), State: unixState(f[5]), Inode: inode}
		if flags, err := strconv.ParseUint(f[3], 16, 32); err == nil && flags&soAcceptCon != 0 {
			s.State = "LISTEN"
		}
		if len(f) > 7 {
			s.Local = f[7]
		}
		out = append(out, s)
	}
	return out
}

// soAcceptCon is the kernel's __SO_ACCEPTCON flag: the socket listens.
const soAcceptCon = 1 << 16

// unixPaths maps every socket inode of /proc/<pid>/net/unix to its path, for the sockets that
// have one (bound, or accepted from a bound listener).
func unixPaths(b []byte) map[uint64]string {
	out := map[uint64]string{}
	lines := bytes.Split(b, []byte{'\n'})
	for _, line := range lines[min(1, len(lines)):] {
		f := strings.Fields(string(line))
		if len(f) < 8 {
			continue
		}
		if inode, err := strconv.ParseUint(f[6], 10, 64); err == nil {
			out[inode] = f[7]
		}
	}
	return out
}

func unixType(t string) string {
	switch t {
	case "0001":
		return "stream"
	case "0002":
		return "dgram"
	case "0005":
		return "seqpacket"
	}
	return t
}

func unixState(st string) string {
	switch st {
	case "01":
		return "UNCONNECTED"
	case "02":
		return "CONNECTING"
	case "03":
		return "CONNECTED"
	case "04":
		return "DISCONNECTING"
	}
	return st
}
