package probes

import (
	"bytes"
	"encoding/hex"
	"net"
	"strconv"
	"strings"
)

// /proc/<pid>/net/tcp, tcp6, udp and udp6: the sockets of the process's network namespace, one
// format for the four. A deep sample names the sockets of a worker's fds (sockets); Saturation
// reads the listeners and accepted connections of the master's ports from it when sock_diag is
// refused (listen.go).

// tcpRow is one socket line of /proc/<pid>/net/tcp, tcp6, udp or udp6, or one socket sock_diag
// reported (listen_linux.go).
type tcpRow struct {
	local  string // "127.0.0.1:8000"
	remote string // the peer, "0.0.0.0:0" when none; "" from sock_diag, which is not asked for it
	port   string // local's port: "8000"
	state  string // as the file prints it, hex (include/net/tcp_states.h): "0A" LISTEN, "01" ESTABLISHED
	rxq    uint64 // rx_queue; for a LISTEN socket, sk_ack_backlog (connections waiting for accept())
	inode  uint64
	// For LISTEN, from sock_diag only: sk_max_ack_backlog, the accept queue's bound.
	max      uint64
	maxKnown bool
}

const (
	tcpEstablished = "01"
	tcpListen      = "0A"
)

// The same states as numbers, for sock_diag's state mask.
const (
	tcpStateEstablished = 1
	tcpStateListen      = 10
)

// tcpStates are the kernel's TCP states (include/net/tcp_states.h), as /proc/net/tcp prints them.
// A UDP socket's state is 01, ESTABLISHED, once connected, 07, CLOSE, before.
var tcpStates = map[string]string{"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
	"05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}

// parseNetTCP reads every socket line of /proc/<pid>/net/tcp, tcp6, udp or udp6:
//
//	sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt   uid  timeout inode
//	 0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 41224 …
//
// Malformed lines are skipped (the file is read while sockets come and go).
func parseNetTCP(b []byte) []tcpRow {
	var out []tcpRow
	first := true
	for len(b) > 0 {
		line := b
		if j := bytes.IndexByte(b, '\n'); j >= 0 {
			line, b = b[:j], b[j+1:]
		} else {
			b = nil
		}
		if first { // header
			first = false
			continue
		}
		f := bytes.Fields(line)
		if len(f) < 10 {
			continue
		}
		_, q, ok := bytes.Cut(f[4], []byte{':'})
		if !ok {
			continue
		}
		rxq, err := strconv.ParseUint(string(q), 16, 64)
		if err != nil {
			continue
		}
		inode, err := strconv.ParseUint(string(f[9]), 10, 64)
		if err != nil {
			continue
		}
		local, err1 := hexAddr(string(f[1]))
		remote, err2 := hexAddr(string(f[2]))
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, tcpRow{local: local, remote: remote, port: port(local), state: string(f[3]), rxq: rxq, inode: inode})
	}
	return out
}

// sockets are the rows whose inode is wanted (a worker's fds), as a deep sample names them:
// proto is tcp, tcp6, udp or udp6; a listener has no remote.
func sockets(rows []tcpRow, proto string, want map[uint64]bool) []Socket {
	var out []Socket
	for _, r := range rows {
		if !want[r.inode] {
			continue
		}
		state := tcpStates[r.state]
		if state == "" {
			state = r.state
		}
		remote := r.remote
		if state == "LISTEN" {
			remote = ""
		}
		out = append(out, Socket{Proto: proto, Local: r.local, Remote: remote, State: state, Inode: r.inode})
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
