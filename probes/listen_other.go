//go:build !linux

package probes

import "errors"

// listenBacklogs needs Linux's sock_diag; elsewhere the bound is unknown.
func listenBacklogs() (map[uint64]uint64, error) { return nil, errors.New("sock_diag: not Linux") }
