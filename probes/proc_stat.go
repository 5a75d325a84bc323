package probes

import (
	"bytes"
	"fmt"
)

// stat is what gwrap uses of /proc/<pid>/stat.
type stat struct {
	state     string
	ppid      int
	majflt    uint64
	utime     uint64 // clock ticks
	stime     uint64
	threads   int
	starttime uint64
}

// parseStat reads /proc/<pid>/stat. comm can hold spaces and parentheses (Gunicorn's process
// titles do), so fields are counted after the LAST ')'.
func parseStat(b []byte) (stat, error) {
	var s stat
	err := statFields(b, 22, func(field int, tok []byte) {
		switch field {
		case 3:
			s.state = string(tok)
		case 4:
			s.ppid = int(atou(tok))
		case 12:
			s.majflt = atou(tok)
		case 14:
			s.utime = atou(tok)
		case 15:
			s.stime = atou(tok)
		case 20:
			s.threads = int(atou(tok))
		case 22:
			s.starttime = atou(tok)
		}
	})
	if err != nil {
		return stat{}, err
	}
	return s, nil
}

// statFields calls fn with each field of a /proc/<pid>/stat line, numbered as proc(5) does, from
// field 3 (state) through last, counted after the last ')' (comm may hold spaces and
// parentheses). A line that ends before field 22 (starttime, which identifies the process) is an
// error.
func statFields(b []byte, last int, fn func(field int, tok []byte)) error {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return fmt.Errorf("stat: %w", errFormat)
	}
	field := 3
	rest := bytes.TrimRight(b[i+2:], "\n")
	for len(rest) > 0 && field <= last {
		j := bytes.IndexByte(rest, ' ')
		tok := rest
		if j >= 0 {
			tok, rest = rest[:j], rest[j+1:]
		} else {
			rest = nil
		}
		fn(field, tok)
		field++
	}
	if field <= 22 {
		return fmt.Errorf("stat: %d fields: %w", field-1, errFormat)
	}
	return nil
}
