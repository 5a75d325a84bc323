package engine

import (
	"fmt"
	"time"

	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
	"github.com/gwrap/gwrap/recycle"
)

// recycleKey is a worker's identity as the recycler knows it.
func recycleKey(id probes.ID) recycle.Key { return recycle.Key{PID: id.PID, Start: id.StartTime} }

// recycleContainer feeds the recycler a cgroup sample and acts on what it decides: once a
// sweep, with the workers' samples of the sweep before.
func (s *state) recycleContainer(st memwatch.Stats) {
	if s.rec == nil {
		return
	}
	s.rec.Container(recycle.Sample{At: st.Time, WorkingSet: st.WorkingSet.V, Limit: st.Limit.V,
		Known: st.WorkingSet.Known && st.Limit.Known})
	s.recycleDecide(st.Time)
}

// recycleWorker feeds the recycler a worker's sample. A sample whose private memory was not read
// counts as under --recycle-worker-memory only when its resident memory is (private memory is a
// part of it); otherwise it leaves the worker's streak as it is.
func (s *state) recycleWorker(w *worker, sm probes.Sample) {
	if s.rec == nil || w.dirty != nil {
		return
	}
	switch {
	case sm.PrivateKnown:
		s.rec.WorkerSample(recycleKey(w.id), sm.Private, true)
	case sm.RSS() < s.rec.Policy().WorkerBytes:
		s.rec.WorkerSample(recycleKey(w.id), 0, false)
	}
}

// recycleGone tells the recycler a worker is gone.
func (s *state) recycleGone(w *worker) {
	if s.rec == nil {
		return
	}
	s.rec.Gone(recycleKey(w.id))
	s.rec.Forget(recycleKey(w.id))
}

// recycleDecide asks the recycler what to do with the master's live HTTP workers, and does it.
func (s *state) recycleDecide(now time.Time) {
	if s.master == 0 || !s.shutdown.IsZero() {
		return
	}
	byKey := map[recycle.Key]*worker{}
	var ws []recycle.Worker
	for _, w := range s.w.live() {
		if !w.watched || w.dirty != nil || w.id.StartTime == 0 || (w.master != 0 && w.master != s.master) {
			continue
		}
		rw := recycle.Worker{Key: recycleKey(w.id), BootedAt: w.bootedAt, Stopping: w.stoppingAt(now) || w.exiting}
		sm, ok := w.samples.last()
		switch {
		case !ok:
			rw.Booting = true
		default:
			beatKnown := true
			for _, m := range sm.Missing {
				beatKnown = beatKnown && m != "heartbeat"
			}
			rw.Booting = (beatKnown && !sm.Heartbeats) || !w.stuckAt.IsZero()
			rw.Private, rw.PrivateKnown, rw.Anon = sm.Private, sm.PrivateKnown, sm.RSSAnon
		}
		byKey[rw.Key] = w
		ws = append(ws, rw)
	}
	d := s.rec.Decide(now, ws)
	if p := d.GaveUp; p != nil {
		s.emit(ev(now, Warn, "worker.recycle_timeout", fmt.Sprintf(
			"worker %d was recycled (%s) %.0fs ago and is still there after the graceful timeout: gwrap leaves it to Gunicorn", p.Worker.Key.PID, p.Reason, now.Sub(p.At).Seconds()),
			f("pid", p.Worker.Key.PID), f("reason", string(p.Reason))))
	}
	if d.Recycle == nil {
		return
	}
	w := byKey[d.Recycle.Key]
	if s.cfg.Terminate == nil {
		s.rec.Gone(d.Recycle.Key)
		return
	}
	if err := s.cfg.Terminate(w.id, s.master); err != nil {
		// Not the worker it was (gone, its pid reused, no longer the master's child): nothing is sent.
		s.rec.Gone(d.Recycle.Key)
		s.warnOnce("recycle-refused", now, "recycle_refused", fmt.Sprintf("gwrap did not recycle worker %d: %v (it recycles only a worker it has checked is still the same child of the master)", w.id.PID, err))
		return
	}
	// Its exit is a stop gwrap asked for: no incident, for as long as Gunicorn's graceful stop lasts.
	w.stop(now, now.Add(s.rec.Policy().Graceful+stopMargin))
	fig := d.Figures
	msg := fmt.Sprintf("recycled worker %d (SIGTERM: it finishes its request, Gunicorn starts a new one): ", w.id.PID)
	if d.Reason == recycle.ReasonContainer {
		msg += fmt.Sprintf("the container's working set was %d MiB, %.0f %% of its %d MiB limit, for %d samples; this worker held the most private memory, %d MiB",
			fig.WorkingSet>>20, 100*fig.Share, fig.Limit>>20, fig.Samples, fig.Private>>20)
	} else {
		msg += fmt.Sprintf("its private memory was %d MiB, over --recycle-worker-memory, for %d samples", fig.Private>>20, fig.Samples)
	}
	fields := []Field{f("pid", w.id.PID), f("start_ticks", w.id.StartTime), f("reason", string(d.Reason)),
		f("measure", string(d.Measure)), f("private_bytes", fig.Private), f("samples", fig.Samples),
		f("age_seconds", round1(fig.Age.Seconds()))}
	if fig.Limit > 0 {
		fields = append(fields, f("working_set_bytes", fig.WorkingSet), f("limit_bytes", fig.Limit), f("share", round3(fig.Share)))
	}
	s.emit(ev(now, Warn, "worker.recycled", msg, fields...).with(Recycled{Reason: string(d.Reason)}))
}

// recycling says, for an OOM kill's report, whether recycling was on and why it did not
// prevent the kill.
func (s *state) recycling(at time.Time) string { return s.rec.Explain(at) }

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }
