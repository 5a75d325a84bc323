//go:build gwrap_faults

package main

import (
	"os"
	"strings"
	"sync"
)

// This file is built only into the test build of gwrap (go build -tags gwrap_faults): its
// tests make each monitoring part panic, once, to show that gwrap and the app run on. The parts
// are named in GWRAP_TEST_PANIC (comma-separated). A shipped gwrap has no such switch: the app's
// environment, which gwrap inherits, cannot turn it on.

var faults struct {
	once sync.Once
	mu   sync.Mutex
	want map[part]bool
}

// fault panics the first time it is reached for a part named in GWRAP_TEST_PANIC.
func fault(p part) {
	faults.once.Do(func() {
		faults.want = map[part]bool{}
		for _, s := range strings.Split(os.Getenv("GWRAP_TEST_PANIC"), ",") {
			faults.want[part(s)] = true
		}
	})
	faults.mu.Lock()
	hit := faults.want[p]
	delete(faults.want, p)
	faults.mu.Unlock()
	if hit {
		panic("injected panic in gwrap's " + string(p))
	}
}
