package memwatch

import (
	"bytes"
	"errors"
	"math"
)

// The formats every cgroup version shares: one number ("max" in v2), and "key value" lines.
// The parsers work on the bytes as read, without converting them to strings: a sample runs
// every second and strconv's errors would make every conversion allocate.

// errNotNumber is parseUint's error: the content is not one unsigned decimal number.
var errNotNumber = errors.New("not an unsigned decimal number")

// parseUint reads one decimal number, surrounding white space allowed.
func parseUint(b []byte) (uint64, error) {
	v, ok := decimal(bytes.TrimSpace(b))
	if !ok {
		return 0, errNotNumber
	}
	return v, nil
}

// decimal parses digits only, refusing overflow.
func decimal(b []byte) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, false
		}
		v = v*10 + d
	}
	return v, true
}

// parseMax reads v2's "max" or a number; "max" is math.MaxUint64.
func parseMax(b []byte) (uint64, error) {
	if bytes.Equal(bytes.TrimSpace(b), []byte("max")) {
		return math.MaxUint64, nil
	}
	return parseUint(b)
}

// lines calls f with each line of b, without its newline.
func lines(b []byte, f func(line []byte)) {
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte{'\n'})
		f(line)
		b = rest
	}
}

// scanKV reads "key value" lines (memory.stat, cpu.stat, memory.events, memory.oom_control) into
// out: out[i] is the value of keys[i], Known false when the key is absent or not a number.
func scanKV(b []byte, keys []string, out []Value) {
	lines(b, func(line []byte) {
		k, v, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			return
		}
		for i, key := range keys {
			if string(k) == key {
				if n, ok := decimal(bytes.TrimSpace(v)); ok {
					out[i] = Value{V: n, Known: true}
				}
				return
			}
		}
	})
}

// parseKV reads every "key value" line with a number into a map.
func parseKV(b []byte) map[string]uint64 {
	m := map[string]uint64{}
	lines(b, func(line []byte) {
		k, v, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			return
		}
		if n, ok := decimal(bytes.TrimSpace(v)); ok {
			m[string(k)] = n
		}
	})
	return m
}
