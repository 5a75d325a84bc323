//go:build !linux

package memwatch

import "os"

// readInto reads the whole file at path (elsewhere than Linux there is no cgroup to read; this
// keeps the package building).
func readInto(path string, _ []byte) ([]byte, error) { return os.ReadFile(path) }

// readCached is readInto (no descriptor cache elsewhere than Linux).
func readCached(_ map[string]int, path string, buf []byte) ([]byte, error) {
	return readInto(path, buf)
}
