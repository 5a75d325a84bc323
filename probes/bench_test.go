package probes

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

// sleepers starts n python3 processes that sit idle, the size of small workers, each holding an
// unlinked wgunicorn- heartbeat file as a Gunicorn ≥ 22 worker does.
func sleepers(b *testing.B, n int) []int {
	b.Helper()
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		b.Skip("needs /usr/bin/python3")
	}
	var pids []int
	for i := 0; i < n; i++ {
		cmd := exec.Command(python, "-c", "import os, tempfile, time; fd, p = tempfile.mkstemp(prefix=\"wgunicorn-\"); os.unlink(p); os.utime(fd, (time.monotonic(),) * 2); x = bytearray(20 << 20); time.sleep(3600)")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		pids = append(pids, cmd.Process.Pid)
		b.Cleanup(func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() })
	}
	time.Sleep(500 * time.Millisecond) // let them allocate
	return pids
}

func BenchmarkHotSample(b *testing.B) {
	pid := sleepers(b, 1)[0]
	fs := NewFS("/proc")
	w, err := openWorker(fs, pid)
	if err != nil {
		b.Fatal(err)
	}
	defer w.close()
	b.Run("gwrap", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := w.sample(time.Now()); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The reference: the same fields through the procfs library.
	b.Run("procfs-library", func(b *testing.B) {
		pfs, _ := procfs.NewFS("/proc")
		b.ReportAllocs()
		for b.Loop() {
			p, err := pfs.Proc(pid)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.Stat(); err != nil {
				b.Fatal(err)
			}
			if _, err := p.NewStatus(); err != nil {
				b.Fatal(err)
			}
			if _, err := p.Schedstat(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDeepSample(b *testing.B) {
	pid := sleepers(b, 1)[0]
	fs := NewFS("/proc")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fs.Deep(pid, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSweep64 samples 64 workers, as one tick of the watcher does.
func BenchmarkSweep64(b *testing.B) {
	pids := sleepers(b, 64)
	fs := NewFS("/proc")
	var ws []*worker
	for _, pid := range pids {
		w, err := openWorker(fs, pid)
		if err != nil {
			b.Fatal(err)
		}
		defer w.close()
		ws = append(ws, w)
	}
	b.ReportAllocs()
	for b.Loop() {
		now := time.Now()
		for _, w := range ws {
			if _, err := w.sample(now); err != nil {
				b.Fatal(err)
			}
		}
	}
}
