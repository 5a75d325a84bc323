package probes

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
)

// errFormat marks a file whose content is not what the kernel writes.
var errFormat = errors.New("unexpected format")

// stat is what gwrap uses of /proc/<pid>/stat.
type stat struct {
	state     string
	ppid      int
	majflt    uint64
	utime     uint64 // clock ticks
	stime     uint64
	threads   int
	starttime uint64
}

// parseStat reads /proc/<pid>/stat. comm can hold spaces and parentheses (Gunicorn's process
// titles do), so fields are counted after the LAST ')'.
func parseStat(b []byte) (stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return stat{}, fmt.Errorf("stat: %w", errFormat)
	}
	var s stat
	field := 3 // the first field after comm is field 3 (state)
	rest := b[i+2:]
	for len(rest) > 0 && field <= 22 {
		j := bytes.IndexByte(rest, ' ')
		tok := rest
		if j >= 0 {
			tok, rest = rest[:j], rest[j+1:]
		} else {
			rest = nil
		}
		switch field {
		case 3:
			s.state = string(tok)
		case 4:
			s.ppid = int(atou(tok))
		case 12:
			s.majflt = atou(tok)
		case 14:
			s.utime = atou(tok)
		case 15:
			s.stime = atou(tok)
		case 20:
			s.threads = int(atou(tok))
		case 22:
			s.starttime = atou(tok)
		}
		field++
	}
	if field <= 22 {
		return stat{}, fmt.Errorf("stat: %d fields: %w", field-1, errFormat)
	}
	return s, nil
}

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

// status is what gwrap uses of /proc/<pid>/status.
type status struct {
	rssAnon, rssFile, rssShmem, swap uint64 // bytes
	threads                          int
	volCtxt, involCtxt               uint64
	killPending                      bool // SIGKILL in SigPnd or ShdPnd
}

// parseStatus reads /proc/<pid>/status ("Name:\tvalue kB" lines).
func parseStatus(b []byte) status {
	var s status
	for len(b) > 0 {
		j := bytes.IndexByte(b, '\n')
		line := b
		if j >= 0 {
			line, b = b[:j], b[j+1:]
		} else {
			b = nil
		}
		k := bytes.IndexByte(line, ':')
		if k < 0 {
			continue
		}
		key, val := line[:k], bytes.TrimLeft(line[k+1:], " \t")
		switch string(key) {
		case "RssAnon":
			s.rssAnon = atou(val) * 1024
		case "RssFile":
			s.rssFile = atou(val) * 1024
		case "RssShmem":
			s.rssShmem = atou(val) * 1024
		case "VmSwap":
			s.swap = atou(val) * 1024
		case "Threads":
			s.threads = int(atou(val))
		case "voluntary_ctxt_switches":
			s.volCtxt = atou(val)
		case "nonvoluntary_ctxt_switches":
			s.involCtxt = atou(val)
		case "SigPnd", "ShdPnd":
			// SIGKILL is bit 9 (mask 0x100): the third hex digit from the right.
			if v := bytes.TrimSpace(val); len(v) >= 3 && hexVal(v[len(v)-3])&1 != 0 {
				s.killPending = true
			}
		}
	}
	return s
}

// parseSchedstat reads /proc/<pid>/schedstat: "run_ns wait_ns timeslices"; it returns wait_ns,
// the time spent runnable but waiting for a CPU.
func parseSchedstat(b []byte) (uint64, error) {
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, fmt.Errorf("schedstat: %w", errFormat)
	}
	return atou(f[1]), nil
}

// rollup is what gwrap uses of /proc/<pid>/smaps_rollup; known says a Private_ line was there.
type rollup struct {
	pss, uss uint64
	known    bool
}

// parseSmapsRollup reads Pss and Private_Clean + Private_Dirty (kB).
func parseSmapsRollup(b []byte) rollup {
	var r rollup
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		k := bytes.IndexByte(line, ':')
		if k < 0 {
			continue
		}
		v := atou(bytes.TrimLeft(line[k+1:], " \t")) * 1024
		switch string(line[:k]) {
		case "Pss":
			r.pss = v
		case "Private_Clean", "Private_Dirty":
			r.uss += v
			r.known = true
		}
	}
	return r
}

// tcpStates are the kernel's TCP states (include/net/tcp_states.h), as /proc/net/tcp prints them.
var tcpStates = map[string]string{"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
	"05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}

// parseNetTCP reads /proc/<pid>/net/tcp, tcp6, udp or udp6 (one format: a UDP socket's state is
// 01, ESTABLISHED, once connected, 07, CLOSE, before) and returns the sockets whose inode is
// wanted.
func parseNetTCP(b []byte, proto string, want map[uint64]bool) []Socket {
	var out []Socket
	lines := bytes.Split(b, []byte{'\n'})
	for _, line := range lines[min(1, len(lines)):] {
		f := strings.Fields(string(line))
		if len(f) < 10 {
			continue
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil || !want[inode] {
			continue
		}
		local, err1 := hexAddr(f[1])
		remote, err2 := hexAddr(f[2])
		if err1 != nil || err2 != nil {
			continue
		}
		state := tcpStates[f[3]]
		if state == "" {
			state = f[3]
		}
		if state == "LISTEN" {
			remote = ""
		}
		out = append(out, Socket{Proto: proto, Local: local, Remote: remote, State: state, Inode: inode})
	}
	return out
}

// hexAddr decodes "0100007F:1F90" (IPv4) or the 32-hex-digit IPv6 form: each 32-bit word is in
// host (little-endian) byte order.
func hexAddr(s string) (string, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return "", errFormat
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return "", errFormat
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return "", errFormat
	}
	ip := net.IP(raw)
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return net.JoinHostPort(ip.String(), strconv.FormatUint(port, 10)), nil
}

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
