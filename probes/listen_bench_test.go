package probes

import (
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSaturationShape measures Saturation in the shape of Gunicorn with 8 sync workers,
// without Gunicorn: this process listens (the master) and 8 idle children inherit the
// listening socket and a heartbeat-like file, as workers do. BenchmarkSaturation is the same
// against real Gunicorn.
func BenchmarkSaturationShape(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	lf, err := l.(*net.TCPListener).File()
	if err != nil {
		b.Fatal(err)
	}
	defer lf.Close()
	hb, err := os.CreateTemp(b.TempDir(), "wgunicorn-")
	if err != nil {
		b.Fatal(err)
	}
	defer hb.Close()
	for range 8 {
		cmd := exec.Command("sleep", "3600")
		cmd.ExtraFiles = []*os.File{lf, hb}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Signal(syscall.SIGKILL); cmd.Wait() })
	}
	fs := NewFS("/proc")
	s, err := fs.Saturation(os.Getpid(), time.Now())
	if err != nil || s.Workers != 8 || len(s.Listeners) != 1 || !s.Listeners[0].MaxKnown || !s.BusyKnown || s.HeartbeatAgeMax < 0 {
		b.Fatalf("%+v %v", s, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fs.Saturation(os.Getpid(), time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}
