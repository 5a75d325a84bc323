package probes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpSockets dumps the TCP sockets of gwrap's network namespace in state LISTEN or ESTABLISHED
// over NETLINK_SOCK_DIAG (what ss uses). It is the fast path: reading /proc/net/tcp walks every
// bucket of the established hash (262144 here) and costs ~7 ms however few sockets there are;
// this dump costs tens of µs. It also gives each listener's bound (idiag_wqueue =
// sk_max_ack_backlog), which /proc does not show. An unprivileged process may dump its own
// namespace's sockets.
func tcpSockets(states uint32) ([]tcpRow, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	// A dump that never ends must not hold a scrape: bound each receive.
	tv := unix.Timeval{Sec: 1}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	var out []tcpRow
	buf := make([]byte, 32<<10)
	for seq, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := inetDiagRequest(family, uint32(seq+1), states)
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return nil, fmt.Errorf("sock_diag request: %w", err)
		}
		for done := false; !done; {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return nil, fmt.Errorf("sock_diag receive: %w", err)
			}
			if done, out, err = parseInetDiag(buf[:n], out); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// inetDiagRequest builds a dump request for family's TCP sockets in the states of the bitmask:
// an nlmsghdr and a struct inet_diag_req_v2 (include/uapi/linux/inet_diag.h), host byte order.
func inetDiagRequest(family uint8, seq, states uint32) []byte {
	const hdr, req = 16, 56
	b := make([]byte, hdr+req)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], hdr+req)
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(b[8:], seq)
	b[hdr+0] = family
	b[hdr+1] = unix.IPPROTO_TCP
	ne.PutUint32(b[hdr+4:], states)
	return b
}

var errSockDiag = errors.New("sock_diag")

// parseInetDiag reads one datagram of a sock_diag dump and appends its sockets to out. Each
// SOCK_DIAG_BY_FAMILY message holds a struct inet_diag_msg: family (0), state (1), the socket id
// (4: source port big-endian, 8: source address, 16 bytes), idiag_rqueue (56), idiag_wqueue
// (60), idiag_inode (68). For a listener rqueue is sk_ack_backlog and wqueue sk_max_ack_backlog
// (net/ipv4/tcp_diag.c, tcp_diag_get_info). It reports whether the dump is done (NLMSG_DONE).
func parseInetDiag(b []byte, out []tcpRow) (bool, []tcpRow, error) {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return false, out, fmt.Errorf("%w: %v", errSockDiag, err)
	}
	ne := binary.NativeEndian
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.NLMSG_DONE:
			return true, out, nil
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if e := int32(ne.Uint32(m.Data)); e != 0 {
					return false, out, fmt.Errorf("%w: %w", errSockDiag, unix.Errno(-e))
				}
			}
			return true, out, nil
		case unix.SOCK_DIAG_BY_FAMILY:
			d := m.Data
			if len(d) < 72 {
				return false, out, fmt.Errorf("%w: inet_diag_msg of %d bytes: %w", errSockDiag, len(d), errFormat)
			}
			var ip net.IP
			switch d[0] {
			case unix.AF_INET:
				ip = net.IP(append([]byte(nil), d[8:12]...))
			case unix.AF_INET6:
				ip = net.IP(append([]byte(nil), d[8:24]...))
				if v4 := ip.To4(); v4 != nil {
					ip = v4
				}
			default:
				continue
			}
			p := strconv.Itoa(int(binary.BigEndian.Uint16(d[4:6])))
			r := tcpRow{local: net.JoinHostPort(ip.String(), p), port: p, rxq: uint64(ne.Uint32(d[56:])), inode: uint64(ne.Uint32(d[68:]))}
			switch d[1] {
			case tcpStateListen:
				r.state, r.max, r.maxKnown = tcpListen, uint64(ne.Uint32(d[60:])), true
			case tcpStateEstablished:
				r.state = tcpEstablished
			default:
				r.state = fmt.Sprintf("%02X", d[1])
			}
			out = append(out, r)
		}
	}
	return false, out, nil
}
