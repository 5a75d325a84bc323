//go:build !linux

package flightrec

import "os"

// lock is a no-op where flock is not available: the host name alone keeps records apart.
func lock(string) (*os.File, bool, error) { return nil, false, nil }
