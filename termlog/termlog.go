// Package termlog writes gwrap's last words where Kubernetes reads a container's termination
// message (terminationMessagePath, /dev/termination-log by default): the exit reason, then the
// last verdicts on killed workers, most important first, in at most 1 KiB (kubelet keeps 4 KiB
// per container and 12 KiB per pod; 1 KiB leaves room for sidecars).
//
// Building the message is pure (Build); writing it (Write) truncates the file and writes in
// place, since the file is a bind mount and a rename onto it fails with EBUSY. Write is bounded
// in time and never blocks on a FIFO or a hung filesystem: it runs on its own goroutine and is
// abandoned after the timeout, as gwrap is exiting anyway.
package termlog

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"
)

// MaxBytes is the size limit of the message.
const MaxBytes = 1024

// Verdict is one post-mortem's conclusion.
type Verdict struct {
	At      time.Time
	PID     int
	Cause   string // one of postmortem's causes (oom_killed, memory_pressure, …), or any string
	Summary string // the report's one sentence
}

// Ranking orders causes by how much they matter to whoever reads why a pod ended, as the
// package that decides them lists them (postmortem.CauseNames: memory first, the kernel killed
// something; then what needs a configuration change; then the rest). A cause not in the list
// comes last.
type Ranking []string

func (r Ranking) of(cause string) int {
	for i, c := range r {
		if c == cause {
			return i
		}
	}
	return len(r)
}

// Recent keeps the last n verdicts (a bounded ring for the engine to feed).
type Recent struct {
	n     int
	rank  Ranking
	list  []Verdict
	total map[string]int
}

// NewRecent keeps the last n verdicts and a count of all of them by cause, ranked by rank.
func NewRecent(n int, rank Ranking) *Recent {
	return &Recent{n: max(1, n), rank: rank, total: map[string]int{}}
}

// Add records a verdict.
func (r *Recent) Add(v Verdict) {
	r.total[v.Cause]++
	r.list = append(r.list, v)
	if len(r.list) > r.n {
		r.list = append(r.list[:0], r.list[len(r.list)-r.n:]...)
	}
}

// Build writes the message: the reason line, a count by cause when there were verdicts, then the
// kept verdicts most important first (latest first within a cause), each cut to what fits.
func (r *Recent) Build(reason string) []byte {
	return r.rank.Build(reason, r.list, r.total)
}

// Build is Recent.Build for explicit verdicts and totals (totals may be nil).
func (rank Ranking) Build(reason string, verdicts []Verdict, totals map[string]int) []byte {
	rankOf := rank.of
	var b strings.Builder
	b.WriteString(clip("gwrap: "+oneLine(reason), MaxBytes-1))
	b.WriteByte('\n')
	if len(totals) > 0 {
		causes := make([]string, 0, len(totals))
		for c := range totals {
			causes = append(causes, c)
		}
		sort.Slice(causes, func(i, j int) bool {
			if rankOf(causes[i]) != rankOf(causes[j]) {
				return rankOf(causes[i]) < rankOf(causes[j])
			}
			return causes[i] < causes[j]
		})
		parts := make([]string, len(causes))
		for i, c := range causes {
			parts[i] = fmt.Sprintf("%d %s", totals[c], c)
		}
		add(&b, "workers killed: "+strings.Join(parts, ", "))
	}
	vs := append([]Verdict(nil), verdicts...)
	sort.SliceStable(vs, func(i, j int) bool {
		if rankOf(vs[i].Cause) != rankOf(vs[j].Cause) {
			return rankOf(vs[i].Cause) < rankOf(vs[j].Cause)
		}
		return vs[i].At.After(vs[j].At)
	})
	for _, v := range vs {
		line := fmt.Sprintf("%s %s pid %d: %s", v.At.UTC().Format(time.RFC3339), v.Cause, v.PID, oneLine(v.Summary))
		if !add(&b, line) {
			break
		}
	}
	return []byte(b.String())
}

// add appends line (cut to the room left, when at least a useful part fits) and a newline.
func add(b *strings.Builder, line string) bool {
	room := MaxBytes - b.Len() - 1
	const useful = 40
	if room < min(useful, len(line)) {
		return false
	}
	b.WriteString(clip(line, room))
	b.WriteByte('\n')
	return true
}

// clip cuts s to at most n bytes on a rune boundary, marking the cut with "…".
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ell = "…"
	cut := max(0, n-len(ell))
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ell
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// ErrTimeout is returned when the write did not finish in time (a hung filesystem).
var ErrTimeout = errors.New("termination log: write timed out")

// ErrNotRegular is returned for a path that is not a regular file (a FIFO, a device, a
// directory): gwrap writes only where a message can be stored.
var ErrNotRegular = errors.New("termination log: not a regular file")

// Write truncates path and writes msg in place, within timeout. The open is non-blocking, so a
// FIFO without a reader fails at once instead of waiting for one.
func Write(path string, msg []byte, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- write(path, msg) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w after %v: %s", ErrTimeout, timeout, path)
	}
}

func write(path string, msg []byte) error {
	// No O_TRUNC yet: a FIFO or device must not be touched before it is known to be a file.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0o644)
	if err != nil {
		return fmt.Errorf("termination log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("termination log: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is %v", ErrNotRegular, path, st.Mode().Type())
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("termination log: truncate %s: %w", path, err)
	}
	if _, err := f.WriteAt(msg, 0); err != nil {
		return fmt.Errorf("termination log: write %s: %w", path, err)
	}
	return nil
}
