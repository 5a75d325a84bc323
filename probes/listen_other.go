//go:build !linux

package probes

import "errors"

// tcpSockets needs Linux's sock_diag; elsewhere Saturation reads /proc/<master>/net/tcp.
func tcpSockets(uint32) ([]tcpRow, error) { return nil, errors.New("sock_diag: not Linux") }
