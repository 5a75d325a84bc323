package probes

import "bytes"

// status is what gwrap uses of /proc/<pid>/status.
type status struct {
	rssAnon, rssFile, rssShmem, swap uint64 // bytes
	threads                          int
	volCtxt, involCtxt               uint64
	killPending                      bool // SIGKILL in SigPnd or ShdPnd
}

// parseStatus reads /proc/<pid>/status ("Name:\tvalue kB" lines).
func parseStatus(b []byte) status {
	var s status
	for len(b) > 0 {
		j := bytes.IndexByte(b, '\n')
		line := b
		if j >= 0 {
			line, b = b[:j], b[j+1:]
		} else {
			b = nil
		}
		k := bytes.IndexByte(line, ':')
		if k < 0 {
			continue
		}
		key, val := line[:k], bytes.TrimLeft(line[k+1:], " \t")
		switch string(key) {
		case "RssAnon":
			s.rssAnon = atou(val) * 1024
		case "RssFile":
			s.rssFile = atou(val) * 1024
		case "RssShmem":
			s.rssShmem = atou(val) * 1024
		case "VmSwap":
			s.swap = atou(val) * 1024
		case "Threads":
			s.threads = int(atou(val))
		case "voluntary_ctxt_switches":
			s.volCtxt = atou(val)
		case "nonvoluntary_ctxt_switches":
			s.involCtxt = atou(val)
		case "SigPnd", "ShdPnd":
			// SIGKILL is bit 9 (mask 0x100): the third hex digit from the right.
			if v := bytes.TrimSpace(val); len(v) >= 3 && hexVal(v[len(v)-3])&1 != 0 {
				s.killPending = true
			}
		}
	}
	return s
}
