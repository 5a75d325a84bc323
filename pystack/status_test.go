package pystack

import (
	"os"
	"syscall"
	"testing"
)

func TestParseStatus(t *testing.T) {
	in := "Name:\tgunicorn\nState:\tS (sleeping)\nSigQ:\t8/96365\nSigPnd:\t0000000000000000\nShdPnd:\t0800000000000000\n" +
		"SigBlk:\t0000000000000000\nSigIgn:\t0000000001001000\nSigCgt:\t08000000083046ee\n"
	st, err := parseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if st.State != 'S' || !has(st.Cgt, 60) || has(st.Cgt, 61) || !has(st.ShdPnd, 60) || has(st.Blk, 60) || !has(st.Cgt, syscall.SIGTERM) {
		t.Errorf("%+v", st)
	}
	for _, bad := range []string{
		"State:\tS\nSigPnd:\t0\nShdPnd:\t0\nSigBlk:\t0\n",              // no SigCgt
		"State:\tS\nSigPnd:\tzz\nShdPnd:\t0\nSigBlk:\t0\nSigCgt:\t0\n", // not hex
		"State:\t\nSigPnd:\t0\nShdPnd:\t0\nSigBlk:\t0\nSigCgt:\t0\n",   // empty state
	} {
		if _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q) accepted", bad)
		}
	}
	// The running kernel's file parses.
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	if _, err := parseStatus(b); err != nil {
		t.Errorf("/proc/self/status: %v", err)
	}
}
