package flightrec

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"sort"
	"time"

	"github.com/gwrap/gwrap/internal/safedir"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/postmortem"
)

// endWindow is how far before the record's last line "at the end" reaches: an OOM counter that
// moved in it, or a working set at the limit in it, is what the death followed.
const endWindow = 15 * time.Second

// Recover reads host's previous record in dir and, when that run died without closing it,
// explains it (Explain); now is this start. It returns nil when there is nothing to explain, and
// when a live gwrap with the same host name holds the record (it is not dead, only sharing the dir).
func Recover(dir, host string, now time.Time, th postmortem.Thresholds) (*postmortem.Report, error) {
	d, err := safedir.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the flight record: %w", err)
	}
	defer d.Close()
	lf, busy, lerr := lock(d, filepath.Base(lockName(dir, host)))
	if busy {
		return nil, nil
	}
	if lerr == nil && lf != nil {
		defer lf.Close()
	}
	rec, err := previous(d, host)
	if rec == nil || rec.Closed {
		return nil, err
	}
	r := Explain(rec, now, th)
	return &r, err
}

// find is what the record shows of its run, and at its end (the endWindow before its last
// line): the facts its post-mortem is written from.
func (rec *Record) find() postmortem.PreviousRun {
	id := rec.Identity
	p := postmortem.PreviousRun{Host: id.Host, PID: id.PID, Version: id.Version, Started: id.Start, Last: rec.Last,
		StopBudget: rec.StopBudget, Settings: rec.Settings, Container: rec.Container, End: endWindow,
		Sampled: len(rec.Container) > 0, AnyWorkers: len(rec.Workers) > 0}
	from := rec.Last.Add(-endWindow)
	var first, low *uint64
	var window []memwatch.Stats // the end window's samples with a working set (or usage)
	for i := range rec.Container {
		st := &rec.Container[i]
		if st.OOMGroup.Known && st.OOMGroup.V == 1 {
			p.OOMGroup = true
		}
		if st.Limit.Known {
			p.Limit = st.Limit.V
		}
		if st.OOMKill.Known {
			p.OOMKnown = true
			if st.Time.Before(from) || first == nil {
				v := st.OOMKill.V
				first = &v
			} else if st.OOMKill.V > *first {
				p.OOMDelta = st.OOMKill.V - *first
			}
		}
		if st.Time.Before(from) {
			continue
		}
		ws := st.WorkingSet
		if !ws.Known {
			ws = st.Usage
		}
		if !ws.Known {
			continue
		}
		p.WSPeak = max(p.WSPeak, ws.V)
		window = append(window, *st)
		if low == nil || ws.V < *low {
			v := ws.V
			low = &v
		}
		p.Rise, p.WSLast, p.RiseTo = ws.V-*low, ws.V, st.Time
	}
	// The rise began after the last sample still at its lowest (within a fiftieth of the rise,
	// or 1 MiB).
	for _, st := range window {
		ws := st.WorkingSet
		if !ws.Known {
			ws = st.Usage
		}
		if ws.V <= *low+max(p.Rise/50, 1<<20) {
			p.RiseFrom = st.Time
		}
	}
	var notified uint64
	for _, o := range rec.OOMs {
		if !o.Time.Before(from) {
			notified += o.Count
		}
	}
	p.OOMDelta = max(p.OOMDelta, notified)
	for _, s := range rec.Signals {
		switch s.Name {
		case "SIGTERM", "SIGINT", "SIGQUIT":
			p.Stop = &postmortem.Stop{Signal: s.Name, At: s.Time}
		}
	}
	for id, ss := range rec.Workers {
		if len(ss) > 0 && !ss[len(ss)-1].Time.Before(from) {
			p.Workers = append(p.Workers, postmortem.WorkerEnd{ID: id, Last: ss[len(ss)-1]})
		}
	}
	sort.Slice(p.Workers, func(i, j int) bool {
		a, b := p.Workers[i].Last.RSS(), p.Workers[j].Last.RSS()
		if a != b {
			return a > b
		}
		return p.Workers[i].ID.PID < p.Workers[j].ID.PID
	})
	if len(p.Workers) > 0 {
		p.Victim = p.Workers[0].ID
	} else { // no worker alive at the end: the largest one the record has
		for id, ss := range rec.Workers {
			if n := len(ss); n > 0 && (p.Victim.PID == 0 || ss[n-1].RSS() > rec.Workers[p.Victim][len(rec.Workers[p.Victim])-1].RSS()) {
				p.Victim = id
			}
		}
	}
	p.Timeline = rec.Workers[p.Victim]
	// The requests the workers alive at the end were serving at their last sample, aged to the
	// record's last line: they ran at least that long, and were in flight when it ended.
	for _, w := range p.Workers {
		for _, q := range rec.Serving[w.ID] {
			q.AgeSeconds = math.Round((q.AgeSeconds+max(0, rec.Last.Sub(w.Last.Time).Seconds()))*10) / 10
			p.Requests = append(p.Requests, postmortem.WorkerRequest{PID: w.ID.PID, Request: q})
		}
	}
	for _, l := range lastLines(rec.Lines, 20) {
		p.Lines = append(p.Lines, l.Text)
	}
	return p
}

// Explain is the post-mortem of the run that wrote rec and died without closing it; now is this
// start: the death happened between rec.Last and now. postmortem says it, from what find reads.
func Explain(rec *Record, now time.Time, th postmortem.Thresholds) postmortem.Report {
	return postmortem.ExplainPreviousRun(rec.find(), now, th)
}

func lastLines(ls []Line, n int) []Line {
	if len(ls) > n {
		return ls[len(ls)-n:]
	}
	return ls
}
