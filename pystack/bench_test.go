package pystack

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
	"golang.org/x/sys/unix"
)

func BenchmarkParse(b *testing.B) {
	in, err := os.ReadFile(filepath.Join("testdata/dumps", "gthread-sleep.txt"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		st, err := Parse(in)
		if err != nil {
			b.Fatal(err)
		}
		st.Top()
	}
}

// spinner is a Python process whose main thread spins in a loop, writing down every gap longer
// than 5 µs between two turns (CLOCK_MONOTONIC): the pauses a stack causes, and the noise.
const spinner = `
import json, signal, sys, time
gaps, stop = [], []
signal.signal(signal.SIGUSR1, lambda *a: stop.append(1))
print("ready", flush=True)
last = time.monotonic()
while not stop:
    now = time.monotonic()
    if now - last > 5e-6:
        gaps.append((now, now - last))
    last = now
json.dump(gaps, sys.stdout)
`

// BenchmarkTake takes the stack of a spinning Python process with the hook: ns/op is the time gwrap
// waits for a stack; pause-µs is the median of the longest gap the spinning thread saw during
// each Take (the worker's pause, with scheduling noise), idle-gap-µs the same in windows as long
// with no Take.
func BenchmarkTake(b *testing.B) {
	testkit.RequireRoot(b)
	h, err := Install(Options{Parent: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	cmd := exec.Command(testkit.Python(b), "-c", spinner)
	cmd.Env = h.Env(os.Environ())
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Process.Kill()
	r := bufio.NewReader(out)
	if line, err := r.ReadString('\n'); err != nil || line != "ready\n" {
		b.Fatalf("spinner: %q %v", line, err)
	}
	pid := cmd.Process.Pid
	mono := func() float64 {
		var ts unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		return float64(ts.Sec) + float64(ts.Nsec)/1e9
	}
	var windows, idle [][2]float64
	b.ResetTimer()
	for b.Loop() {
		t0 := mono()
		if _, err := h.Take(context.Background(), pid); err != nil {
			b.Fatal(err)
		}
		t1 := mono()
		windows = append(windows, [2]float64{t0, t1})
		b.StopTimer()
		time.Sleep(time.Duration((t1 - t0) * 1e9)) // an idle window as long, to measure the noise
		idle = append(idle, [2]float64{t1, mono()})
		b.StartTimer()
	}
	b.StopTimer()
	_ = syscall.Kill(pid, syscall.SIGUSR1)
	var gaps [][2]float64
	if err := json.NewDecoder(r).Decode(&gaps); err != nil {
		b.Fatal(err)
	}
	_ = cmd.Wait()
	b.ReportMetric(medianMaxGap(gaps, windows)*1e6, "pause-µs")
	b.ReportMetric(medianMaxGap(gaps, idle)*1e6, "idle-gap-µs")
}

// medianMaxGap is the median over the windows of the longest gap ending in each window.
func medianMaxGap(gaps [][2]float64, windows [][2]float64) float64 {
	var max []float64
	for _, w := range windows {
		m := 0.0
		for _, g := range gaps {
			if g[0] >= w[0] && g[0] <= w[1] && g[1] > m {
				m = g[1]
			}
		}
		max = append(max, m)
	}
	if len(max) == 0 {
		return 0
	}
	sort.Float64s(max)
	return max[len(max)/2]
}
