package probes

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// unixPeers finds the peers of unix sockets: for each socket inode asked about, the inode of the
// socket at the other end. The kernel gives it only through NETLINK_SOCK_DIAG (unix_diag with
// UDIAG_SHOW_PEER); /proc/net/unix has no peer column.
type unixPeers interface {
	Peers(want map[uint64]bool) (map[uint64]uint64, error)
}

// The netlink and unix_diag constants of linux/netlink.h and linux/unix_diag.h.
const (
	nlmsgHdrLen     = 16
	nlmsgNoop       = 1
	nlmsgError      = 2
	nlmsgDone       = 3
	sockDiagByFam   = 20 // SOCK_DIAG_BY_FAMILY
	udiagShowPeer   = 0x4
	unixDiagPeer    = 2 // the UNIX_DIAG_PEER attribute: the peer's inode, u32
	unixDiagMsgLen  = 16
	unixDiagReqLen  = 24
	nlaHdrLen       = 4
	nlmFRequest     = 0x1
	nlmFDump        = 0x300 // NLM_F_ROOT | NLM_F_MATCH
	afUnix          = 1
	allSocketStates = 0xffffffff
)

// unixDiagRequest is a dump request for every unix socket of the netlink socket's network
// namespace, with their peers.
func unixDiagRequest(seq uint32) []byte {
	b := make([]byte, nlmsgHdrLen+unixDiagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], sockDiagByFam)
	ne.PutUint16(b[6:], nlmFRequest|nlmFDump)
	ne.PutUint32(b[8:], seq)
	r := b[nlmsgHdrLen:]
	r[0] = afUnix                        // sdiag_family
	ne.PutUint32(r[4:], allSocketStates) // udiag_states
	ne.PutUint32(r[12:], udiagShowPeer)  // udiag_show
	ne.PutUint32(r[16:], 0xffffffff)     // udiag_cookie: none
	ne.PutUint32(r[20:], 0xffffffff)
	return b
}

// errTruncated says a netlink message is shorter than its header claims.
var errTruncated = errors.New("truncated netlink message")

// parseUnixDiag reads one buffer of a unix_diag dump's replies into peers (inode → peer inode),
// keeping the sockets of want. It reports whether the dump is done (NLMSG_DONE), and fails on a
// netlink error reply or a malformed message.
func parseUnixDiag(b []byte, want map[uint64]bool, peers map[uint64]uint64) (done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		n := int(ne.Uint32(b[0:]))
		typ := ne.Uint16(b[4:])
		if n < nlmsgHdrLen || n > len(b) {
			return false, errTruncated
		}
		body := b[nlmsgHdrLen:n]
		b = b[min(align4(n), len(b)):]
		switch typ {
		case nlmsgDone:
			return true, nil
		case nlmsgError:
			if len(body) >= 4 {
				if errno := int32(ne.Uint32(body)); errno != 0 {
					return false, fmt.Errorf("sock_diag: errno %d", -errno)
				}
			}
			continue
		case nlmsgNoop:
			continue
		case sockDiagByFam:
		default:
			continue
		}
		if len(body) < unixDiagMsgLen {
			return false, errTruncated
		}
		ino := uint64(ne.Uint32(body[4:]))
		attrs := body[unixDiagMsgLen:]
		for len(attrs) >= nlaHdrLen {
			l := int(ne.Uint16(attrs[0:]))
			t := ne.Uint16(attrs[2:]) & 0x3fff // without NLA_F_NESTED / NLA_F_NET_BYTEORDER
			if l < nlaHdrLen || l > len(attrs) {
				return false, errTruncated
			}
			if t == unixDiagPeer && l >= nlaHdrLen+4 && want[ino] {
				if peer := uint64(ne.Uint32(attrs[nlaHdrLen:])); peer != 0 {
					peers[ino] = peer
				}
			}
			attrs = attrs[min(align4(l), len(attrs)):]
		}
	}
	return false, nil
}

func align4(n int) int { return (n + 3) &^ 3 }

// resolveUnixPeers fills Remote of the connected unix stream sockets in ss with the path of the
// socket at the other end, when it has one: paths maps inodes to paths (/proc/<pid>/net/unix,
// where an accepted server-side socket shows its listener's path, so a client of PostgreSQL's
// socket gets /var/run/postgresql/.s.PGSQL.5432).
func resolveUnixPeers(ss []Socket, peers map[uint64]uint64, paths map[uint64]string) {
	for i := range ss {
		s := &ss[i]
		if s.Proto != "unix" || s.Type != "stream" || s.State != "CONNECTED" || s.Remote != "" {
			continue
		}
		if p, ok := peers[s.Inode]; ok {
			s.Remote = paths[p]
		}
	}
}

// connectedUnix picks the inodes of ss worth asking the peers of: connected unix streams.
func connectedUnix(ss []Socket) map[uint64]bool {
	var out map[uint64]bool
	for _, s := range ss {
		if s.Proto == "unix" && s.Type == "stream" && s.State == "CONNECTED" {
			if out == nil {
				out = map[uint64]bool{}
			}
			out[s.Inode] = true
		}
	}
	return out
}
