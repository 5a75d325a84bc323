package pystack

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"syscall"
)

// sigState is the signal part of /proc/<pid>/status: for the thread group leader (the main
// thread) its private pending set and blocked mask, and the process's shared pending set and
// caught set. Bit n-1 stands for signal n.
type sigState struct {
	Pnd, ShdPnd, Blk, Cgt uint64
	State                 byte // R, S, D, Z, …
}

func has(mask uint64, sig syscall.Signal) bool { return mask&(1<<(uint(sig)-1)) != 0 }

// parseStatus reads the fields of /proc/<pid>/status that Take needs; each must be present.
func parseStatus(b []byte) (sigState, error) {
	var s sigState
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		var dst *uint64
		switch string(k) {
		case "State":
			if len(v) == 0 {
				return sigState{}, fmt.Errorf("status: empty State")
			}
			s.State = v[0]
			seen++
			continue
		case "SigPnd":
			dst = &s.Pnd
		case "ShdPnd":
			dst = &s.ShdPnd
		case "SigBlk":
			dst = &s.Blk
		case "SigCgt":
			dst = &s.Cgt
		default:
			continue
		}
		n, err := strconv.ParseUint(string(v), 16, 64)
		if err != nil {
			return sigState{}, fmt.Errorf("status: %s %q: %w", k, v, err)
		}
		*dst = n
		seen++
	}
	if seen != 5 {
		return sigState{}, fmt.Errorf("status: %d of State, SigPnd, ShdPnd, SigBlk, SigCgt found", seen)
	}
	return s, nil
}
