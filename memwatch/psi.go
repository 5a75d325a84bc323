package memwatch

import (
	"bytes"
	"path/filepath"
)

// Pressure stall information: memory.pressure and cpu.pressure in the container's cgroup (v2,
// or the unified mount of a hybrid host), else the host's /proc/pressure/memory and cpu,
// marked so.

func (c *Cgroup) samplePSI(r *reader) {
	st := r.st
	dir, host := c.l.psiDir, false
	if dir == "" {
		dir, host = filepath.Join(c.proc, "pressure"), true
	}
	var psi PSI
	mem, err1 := r.readRaw(filepath.Join(dir, pressureFile("memory", host)))
	if err1 == nil {
		psi.MemorySome10, psi.MemoryFull10 = parsePSI(mem)
	}
	cpu, err2 := r.readRaw(filepath.Join(dir, pressureFile("cpu", host)))
	if err2 == nil {
		psi.CPUSome10, _ = parsePSI(cpu)
	}
	if err1 != nil && err2 != nil {
		st.Missing = append(st.Missing, "pressure (PSI unavailable)")
		return
	}
	psi.Known, psi.HostWide = true, host
	st.PSI = psi
}

func pressureFile(res string, host bool) string {
	if host {
		return res
	}
	return res + ".pressure"
}

// parsePSI reads "some avg10=1.50 avg60=… total=…" and "full …" lines: the avg10 of each.
func parsePSI(b []byte) (some, full float64) {
	lines(b, func(line []byte) {
		kind, rest, _ := bytes.Cut(line, []byte{' '})
		avg, _, _ := bytes.Cut(rest, []byte{' '})
		num, ok := bytes.CutPrefix(avg, []byte("avg10="))
		if !ok {
			return
		}
		v, ok := fixedPoint(num)
		if !ok {
			return
		}
		switch string(kind) {
		case "some":
			some = v
		case "full":
			full = v
		}
	})
	return some, full
}

// fixedPoint parses "12.25" (the kernel prints PSI averages with two decimals): the digits as one
// integer divided once by a power of ten, which rounds as strconv.ParseFloat does.
func fixedPoint(b []byte) (float64, bool) {
	whole, frac, _ := bytes.Cut(b, []byte{'.'})
	if len(frac) > 6 {
		return 0, false
	}
	w, ok := decimal(whole)
	if !ok || w > 1<<32 {
		return 0, false
	}
	scale := uint64(1)
	for range frac {
		scale *= 10
	}
	f := uint64(0)
	if len(frac) > 0 {
		if f, ok = decimal(frac); !ok {
			return 0, false
		}
	}
	if len(frac) == 0 {
		return float64(w), true
	}
	return float64(w*scale+f) / float64(scale), true
}
