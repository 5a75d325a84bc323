package probes

import (
	"encoding/binary"
	"errors"
	"fmt"

	"syscall"

	"golang.org/x/sys/unix"
)

// listenBacklogs dumps the TCP listeners of gwrap's network namespace over NETLINK_SOCK_DIAG
// and returns each one's accept-queue bound (idiag_wqueue = sk_max_ack_backlog) by inode. An
// unprivileged process may dump its own namespace's sockets.
func listenBacklogs() (map[uint64]uint64, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	// A dump that never ends must not hold a scrape: bound each receive.
	tv := unix.Timeval{Sec: 1}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	out := map[uint64]uint64{}
	buf := make([]byte, 32<<10)
	for seq, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := unix.Sendto(fd, inetDiagRequest(family, uint32(seq+1)), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return nil, fmt.Errorf("sock_diag request: %w", err)
		}
		for done := false; !done; {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return nil, fmt.Errorf("sock_diag receive: %w", err)
			}
			done, err = parseInetDiag(buf[:n], out)
			if err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// inetDiagRequest builds a dump request for family's TCP sockets in state LISTEN: an nlmsghdr
// and a struct inet_diag_req_v2 (include/uapi/linux/inet_diag.h), host byte order.
func inetDiagRequest(family uint8, seq uint32) []byte {
	const hdr, req = 16, 56
	b := make([]byte, hdr+req)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], hdr+req)
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(b[8:], seq)
	b[hdr+0] = family
	b[hdr+1] = unix.IPPROTO_TCP
	ne.PutUint32(b[hdr+4:], 1<<10) // idiag_states: 1 << TCP_LISTEN (10)
	return b
}

var errSockDiag = errors.New("sock_diag")

// parseInetDiag reads one datagram of a sock_diag dump: each SOCK_DIAG_BY_FAMILY message holds
// a struct inet_diag_msg, of which it takes idiag_wqueue (offset 60) and idiag_inode (68) into
// out. It reports whether the dump is done (NLMSG_DONE).
func parseInetDiag(b []byte, out map[uint64]uint64) (bool, error) {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return false, fmt.Errorf("%w: %v", errSockDiag, err)
	}
	ne := binary.NativeEndian
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.NLMSG_DONE:
			return true, nil
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if e := int32(ne.Uint32(m.Data)); e != 0 {
					return false, fmt.Errorf("%w: %w", errSockDiag, unix.Errno(-e))
				}
			}
			return true, nil
		case unix.SOCK_DIAG_BY_FAMILY:
			if len(m.Data) < 72 {
				return false, fmt.Errorf("%w: inet_diag_msg of %d bytes: %w", errSockDiag, len(m.Data), errFormat)
			}
			out[uint64(ne.Uint32(m.Data[68:]))] = uint64(ne.Uint32(m.Data[60:]))
		}
	}
	return false, nil
}
