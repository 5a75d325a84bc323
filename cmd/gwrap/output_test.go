package main

import (
	"io"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/supervisor"
)

// BenchmarkRelayLine is the per-line cost of the relay after the read: parse, JSON, write.
func BenchmarkRelayLine(b *testing.B) {
	line := []byte("[2026-11-25 03:42:30 +0000] [3601] [INFO] GET /items/12345 handled in 12 ms")
	for _, format := range []string{"json", "text"} {
		b.Run(format, func(b *testing.B) {
			out := newOutput(io.Discard, format, time.Now)
			a := gunicorn.NewAssembler(200, 64<<10)
			b.ReportAllocs()
			for b.Loop() {
				ev, _ := a.Add(line)
				out.relay(supervisor.StreamStderr, line, ev)
			}
		})
	}
}
