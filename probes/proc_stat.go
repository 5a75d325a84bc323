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
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return stat{}, fmt.Errorf("stat: %w", errFormat)
	}
	var s stat
	field := 3 // the first field after comm is field 3 (state)
	rest := b[i+2:]
	for len(rest) > 0 && field <= 22 {
		j := bytes.IndexByte(rest, ' ')
		tok := rest
		if j >= 0 {
			tok, rest = rest[:j], rest[j+1:]
		} else {
			rest = nil
		}
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
		field++
	}
	if field <= 22 {
		return stat{}, fmt.Errorf("stat: %d fields: %w", field-1, errFormat)
	}
	return s, nil
}
