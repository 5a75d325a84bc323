package pystack

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxSourceLine bounds the text Source returns.
const maxSourceLine = 200

// ErrNoSource marks a frame whose source line cannot be read (generated code, a file gone).
var ErrNoSource = errors.New("no source line")

// Source returns the text of a frame's line as the process sees its files (through
// /proc/<pid>/root, so a worker in another mount namespace is read right), trimmed and cut at 200
// bytes: e.g. `cur.execute("SELECT pg_sleep(100)")`, which names the C call (psycopg2's execute,
// time.sleep, sum) that faulthandler cannot show as a frame. The file may have changed on disk
// since the process loaded it; say "the line now reads" when quoting it.
//
// Reads /proc/<pid>/root/<file>.
func (h *Hook) Source(pid int, f Frame) (string, error) {
	if f.Line <= 0 || !filepath.IsAbs(f.File) {
		return "", fmt.Errorf("pystack: %s: %w", f, ErrNoSource)
	}
	file, err := os.Open(filepath.Join(h.procRoot, strconv.Itoa(pid), "root", f.File))
	if err != nil {
		return "", fmt.Errorf("pystack: %s: %w: %w", f, ErrNoSource, err)
	}
	defer file.Close()
	line, err := nthLine(file, f.Line)
	if err != nil {
		return "", fmt.Errorf("pystack: %s: %w: %w", f, ErrNoSource, err)
	}
	return line, nil
}

// nthLine returns line n (from 1) of r, trimmed, cut at maxSourceLine bytes; long lines are read
// through without being held whole.
func nthLine(r io.Reader, n int) (string, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, 64<<20), 4096)
	var b []byte
	for line := 1; ; {
		chunk, err := br.ReadSlice('\n')
		if line == n && len(b) < 4*maxSourceLine {
			b = append(b, chunk...)
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue // the same line goes on
		case err == nil || errors.Is(err, io.EOF) && (len(chunk) > 0 || line == n && len(b) > 0):
			if line == n {
				s := strings.TrimSpace(string(b))
				if len(s) > maxSourceLine {
					k := maxSourceLine
					for k > 0 && !utf8.RuneStart(s[k]) {
						k-- // never cut a character in two
					}
					s = s[:k] + "…"
				}
				return s, nil
			}
			if err != nil {
				return "", fmt.Errorf("line %d of %d: %w", n, line, io.ErrUnexpectedEOF)
			}
			line++
		case errors.Is(err, io.EOF):
			return "", fmt.Errorf("line %d of %d: %w", n, line-1, io.ErrUnexpectedEOF)
		default:
			return "", err
		}
	}
}
