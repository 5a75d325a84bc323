package probes

import "bytes"

// rollup is what gwrap uses of /proc/<pid>/smaps_rollup; known says a Private_ line was there.
type rollup struct {
	pss, uss uint64
	known    bool
}

// parseSmapsRollup reads Pss and Private_Clean + Private_Dirty (kB).
func parseSmapsRollup(b []byte) rollup {
	var r rollup
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		k := bytes.IndexByte(line, ':')
		if k < 0 {
			continue
		}
		v := atou(bytes.TrimLeft(line[k+1:], " \t")) * 1024
		switch string(line[:k]) {
		case "Pss":
			r.pss = v
		case "Private_Clean", "Private_Dirty":
			r.uss += v
			r.known = true
		}
	}
	return r
}
