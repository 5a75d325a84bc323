package testkit

import (
	"bufio"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// Events collects the lines a process writes (gwrap's JSON output) while a test waits for them.
type Events struct {
	mu   sync.Mutex
	cond *sync.Cond
	all  []string
	done bool
}

// CollectEvents reads r line by line until it ends.
func CollectEvents(r io.Reader) *Events {
	l := &Events{}
	l.cond = sync.NewCond(&l.mu)
	go func() {
		br := bufio.NewReaderSize(r, 1<<20)
		for {
			s, err := br.ReadString('\n')
			l.mu.Lock()
			if s != "" {
				l.all = append(l.all, strings.TrimSuffix(s, "\n"))
			}
			if err != nil {
				l.done = true
			}
			l.cond.Broadcast()
			l.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return l
}

// Wait returns the first JSON event with pred, or fails the test after d (or when the output
// ends first) with the output so far.
func (l *Events) Wait(t testing.TB, d time.Duration, what string, pred func(map[string]any) bool) map[string]any {
	t.Helper()
	m, _ := l.WaitAfter(t, 0, d, what, pred)
	return m
}

// WaitAfter is Wait over the lines after the first n (a restarted container's log holds the
// earlier runs' lines first); it also returns the matching line's index.
func (l *Events) WaitAfter(t testing.TB, n int, d time.Duration, what string, pred func(map[string]any) bool) (map[string]any, int) {
	t.Helper()
	deadline := time.Now().Add(d)
	timer := time.AfterFunc(d, func() { l.mu.Lock(); l.cond.Broadcast(); l.mu.Unlock() })
	defer timer.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for seen := n; ; {
		for ; seen < len(l.all); seen++ {
			var m map[string]any
			if json.Unmarshal([]byte(l.all[seen]), &m) == nil && pred(m) {
				return m, seen
			}
		}
		if l.done || time.Now().After(deadline) {
			t.Fatalf("no %s within %v; output:\n%s", what, d, strings.Join(l.all, "\n"))
		}
		l.cond.Wait()
	}
}

// Len is the number of lines so far.
func (l *Events) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

// All returns every JSON event so far, after the first n lines.
func (l *Events) All(n int) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, s := range l.all[min(n, len(l.all)):] {
		var m map[string]any
		if json.Unmarshal([]byte(s), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// Text is the output so far.
func (l *Events) Text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// IsEvent matches events named name.
func IsEvent(name string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["event"] == name }
}
