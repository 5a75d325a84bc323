package probes

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Sampler takes hot samples of processes on demand, outside a Watcher (gwrap status, run beside
// the live gwrap, has no watcher of its own): a process's first sample has no rates (NoRates), a
// later one has them since the one before. Not safe for concurrent use.
type Sampler struct {
	fs FS
	ws map[ID]*worker
}

// NewSampler returns a Sampler reading f's processes; Close releases their files.
func (f FS) NewSampler() *Sampler { return &Sampler{fs: f, ws: map[ID]*worker{}} }

// Sample takes a hot sample of process id (its heartbeat age included), failing when it is gone
// or its pid names another process now.
func (s *Sampler) Sample(id ID, now time.Time) (Sample, error) {
	w := s.ws[id]
	if w == nil {
		var err error
		if w, err = openWorker(s.fs, id.PID); err != nil {
			return Sample{}, err
		}
		if w.id != id {
			w.close()
			return Sample{}, errGone
		}
		s.ws[id] = w
	}
	return w.sample(now)
}

// Close closes the files of every process sampled.
func (s *Sampler) Close() {
	for id, w := range s.ws {
		w.close()
		delete(s.ws, id)
	}
}

// Age is how long process id has run: the system's uptime (<proc>/uptime) minus its start time.
func (f FS) Age(id ID) (time.Duration, error) {
	b, err := os.ReadFile(f.root + "/uptime")
	if err != nil {
		return 0, err
	}
	up, err := parseUptime(b)
	if err != nil {
		return 0, err
	}
	age := up - time.Duration(id.StartTime)*time.Second/userHZ
	if age < 0 {
		return 0, fmt.Errorf("uptime %s before start %d ticks: %w", up, id.StartTime, errFormat)
	}
	return age, nil
}

// parseUptime reads the first field of /proc/uptime ("12345.67 23456.78").
func parseUptime(b []byte) (time.Duration, error) {
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0, fmt.Errorf("uptime: %w", errFormat)
	}
	v, err := strconv.ParseFloat(string(f[0]), 64)
	if err != nil || v < 0 || v > 1e10 {
		return 0, fmt.Errorf("uptime %q: %w", f[0], errFormat)
	}
	return time.Duration(v * float64(time.Second)), nil
}
