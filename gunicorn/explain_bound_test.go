package gunicorn

import (
	"bufio"
	"io"
	"runtime"
	"strings"
	"testing"
)

// endless is n bytes of 'x' without a newline, then tail: a log with a giant line, made as it
// is read (nothing of its size is ever held by the test).
type endless struct {
	n    int64
	tail *strings.Reader
}

func (e *endless) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return e.tail.Read(p)
	}
	k := min(int64(len(p)), e.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	e.n -= k
	return int(k), nil
}

// TestExplainGiantLine: a 100 MB line costs explain about MaxExplainLine of memory, is cut and
// marked, is said in a warning, and the lines after it are read as usual.
func TestExplainGiantLine(t *testing.T) {
	tail := "\n[2026-11-25 03:42:36 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:7)\n" +
		"[2026-11-25 03:42:37 +0000] [1] [ERROR] Worker (pid:7) was sent SIGKILL! Perhaps out of memory?\n"
	const size = 100 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ex, err := Explain(&endless{n: size, tail: strings.NewReader(tail)})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("explain of a %d MiB line allocated %d MiB in all", size>>20, alloc>>20)
	if alloc > 16<<20 {
		t.Errorf("explain allocated %d MiB for a %d MiB line: it holds the line", alloc>>20, size>>20)
	}
	if ex.Lines != 3 || len(ex.Incidents) != 1 || ex.Incidents[0].PID != 7 {
		t.Errorf("lines %d, incidents %+v; want 3 lines and worker 7's timeout", ex.Lines, ex.Incidents)
	}
	want := "line 1 is longer than 1048576 bytes: its last 103809024 bytes were not read"
	if len(ex.Warnings) == 0 || ex.Warnings[0] != want {
		t.Errorf("warnings %q; want %q", ex.Warnings, want)
	}
}

// TestLineReaderCutsAndMarks: lines up to max come whole, longer ones cut with the count.
func TestLineReaderCutsAndMarks(t *testing.T) {
	in := "short\n" + strings.Repeat("y", 300) + "\nlast"
	lr := lineReader{br: bufioReader(strings.NewReader(in)), max: 100}
	var got []string
	var cuts []int64
	for {
		line, cut, err := lr.next()
		if len(line) > 0 {
			got = append(got, string(trimEOL(line)))
			cuts = append(cuts, cut)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 3 || got[0] != "short" || got[1] != strings.Repeat("y", 100) || got[2] != "last" ||
		cuts[0] != 0 || cuts[1] != 200 || cuts[2] != 0 {
		t.Errorf("lines %q cuts %v", got, cuts)
	}
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 16) }
