package engine

import (
	"errors"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
	"github.com/gwrap/gwrap/recycle"
)

// TestRecycleActsAndItsExitIsNoIncident: with --recycle-at 80, three samples over 80 % of the
// limit make the engine terminate the worker with the most private memory, once, say so
// (worker.recycled), and take its silent exit as the stop it asked for: no report. When the
// worker cannot be checked to be the same process, nothing is marked and gwrap says why.
func TestRecycleActsAndItsExitIsNoIncident(t *testing.T) {
	for _, c := range []struct {
		name    string
		refuse  bool
		reports int
	}{
		{"terminated", false, 0},
		{"refused: the pid was reused", true, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, rec := testState(gunicorn.Settings{Timeout: 30, GracefulTimeout: 5, Workers: 2, WorkerClass: "sync", LogLevel: "info"})
			var sent []probes.ID
			st.cfg.Terminate = func(id probes.ID, master int) error {
				if master != 100 {
					t.Errorf("Terminate's master %d, want 100", master)
				}
				if c.refuse {
					return errors.New("not that worker any more")
				}
				sent = append(sent, id)
				return nil
			}
			st.rec = recycle.New(recycle.Policy{At: 0.8, MinAge: 5 * time.Second, Interval: 10 * time.Second})
			small, big := probes.ID{PID: 101, StartTime: 7}, probes.ID{PID: 102, StartTime: 8}
			proc := newFakeProc(100)
			proc.install(st)
			proc.child(small)
			proc.child(big)
			at := bootWorker(st, 100, small)
			st.probe(probes.Event{Kind: probes.EventBoot, ID: big, Time: t0})
			// Its own boot line reached gwrap: so would its "Worker exiting", and a silent end is a death.
			st.line("stderr", []byte("[2026-11-25 06:00:00 +0000] [102] [INFO] Booting worker with pid: 102"), t0.Add(time.Second))
			for i := range 4 {
				now := at.Add(time.Duration(i) * time.Second)
				for _, w := range []struct {
					id   probes.ID
					priv uint64
				}{{small, 60 << 20}, {big, 150 << 20}} {
					sm := probes.Sample{Time: now, State: "S", RSSAnon: w.priv, Private: w.priv, PrivateKnown: true, Heartbeats: true}
					st.probe(probes.Event{Kind: probes.EventSample, ID: w.id, Time: now, Sample: sm})
				}
				st.containerSample(memwatch.Stats{Time: now, WorkingSet: memwatch.Value{V: 250 << 20, Known: true}, Limit: memwatch.Value{V: 300 << 20, Known: true}})
			}
			evs := rec.named("worker.recycled")
			if c.refuse {
				refused := 0
				for _, e := range rec.named("config.warning") {
					if code, _ := e.Get("code"); code == "recycle_refused" {
						refused++
					}
				}
				if len(evs) != 0 || refused != 1 {
					t.Fatalf("refused: %d worker.recycled, %d config.warning recycle_refused; want 0 and 1", len(evs), refused)
				}
			} else {
				if len(sent) != 1 || sent[0] != big || len(evs) != 1 {
					t.Fatalf("terminated %v, %d worker.recycled; want [%v] and 1", sent, len(evs), big)
				}
				if r, _ := evs[0].Get("reason"); r != "container_memory" {
					t.Errorf("reason %v", r)
				}
				if p, _ := evs[0].Get("private_bytes"); p != uint64(150<<20) {
					t.Errorf("private_bytes %v", p)
				}
			}
			// The worker exits silently (its INFO lines reach gwrap, so a silent vanish is
			// otherwise a report).
			gone := at.Add(5 * time.Second)
			proc.reap(102)
			st.probe(probes.Event{Kind: probes.EventVanish, ID: big, Time: gone})
			st.tick(gone.Add(time.Minute))
			if len(rec.reports) != c.reports {
				t.Errorf("%d reports, want %d", len(rec.reports), c.reports)
			}
		})
	}
}

// TestForecastWarnsOncePerClimb: a working set climbing 4 MiB a second towards a 300 MiB limit
// is said once (memory.forecast, with the rate and since when); a flat one never is.
func TestForecastWarnsOncePerClimb(t *testing.T) {
	for _, c := range []struct {
		name string
		step uint64
		want int
	}{{"climbing", 4 << 20, 1}, {"flat", 0, 0}} {
		t.Run(c.name, func(t *testing.T) {
			st, rec := testState(gunicorn.Settings{Timeout: 30, WorkerClass: "sync"})
			for i := range 40 {
				ws := 60<<20 + uint64(i)*c.step
				st.containerSample(memwatch.Stats{Time: t0.Add(time.Duration(i) * time.Second),
					WorkingSet: memwatch.Value{V: ws, Known: true}, Limit: memwatch.Value{V: 300 << 20, Known: true}})
			}
			evs := rec.named("memory.forecast")
			if len(evs) != c.want {
				t.Fatalf("%d memory.forecast, want %d", len(evs), c.want)
			}
			if c.want == 0 {
				return
			}
			if r, _ := evs[0].Get("growth_bytes_per_second"); r.(float64) < 3.9*(1<<20) || r.(float64) > 4.1*(1<<20) {
				t.Errorf("growth %v, want 4 MiB/s", r)
			}
			// Since is the last sample at the floor, to within the noise (4 MiB): the first or second.
			s, _ := evs[0].Get("since")
			if since, err := time.Parse(time.RFC3339Nano, s.(string)); err != nil || since.Before(t0) || since.After(t0.Add(time.Second)) {
				t.Errorf("since %v, want the climb's start %v", s, t0)
			}
		})
	}
}
