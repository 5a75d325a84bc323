package probes

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// netlinkUnixDiag asks the kernel for unix sockets' peers over NETLINK_SOCK_DIAG, in gwrap's own
// network namespace (a container's workers share it).
type netlinkUnixDiag struct{}

var diagSeq atomic.Uint32

// Peers dumps the namespace's unix sockets once and keeps the peers of want.
func (netlinkUnixDiag) Peers(want map[uint64]bool) (map[uint64]uint64, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	// A dump answers at once; the timeout only keeps a deep sample from hanging on a broken kernel.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("sock_diag timeout: %w", err)
	}
	if err := unix.Sendto(fd, unixDiagRequest(diagSeq.Add(1)), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	peers := map[uint64]uint64{}
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag reply: %w", err)
		}
		done, err := parseUnixDiag(buf[:n], want, peers)
		if err != nil {
			return nil, err
		}
		if done || n == 0 {
			return peers, nil
		}
	}
}

func defaultUnixPeers() unixPeers { return netlinkUnixDiag{} }
