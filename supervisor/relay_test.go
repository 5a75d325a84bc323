package supervisor

import (
	"bytes"
	"strings"
	"testing"
)

func BenchmarkRelay(b *testing.B) {
	line := "[2026-11-25 03:42:30 +0000] [3601] [INFO] GET /items/12345 handled in 12 ms\n"
	in := []byte(strings.Repeat(line, 10000))
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		relay(bytes.NewReader(in), StreamStdout, 4<<20, func(Stream, []byte) { n++ })
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "lines/s")
}
