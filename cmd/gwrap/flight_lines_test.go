package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/flightrec"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/output"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// TestFlightRecordKeepsGunicornsReasons: the lines the engine takes reach the flight record as
// gwrap wires them (recorded), and the record keeps those flightrec records: the master's
// "Reason: App failed to load." (which names no worker: the tee's own substring filter dropped
// it before issue 23) as well as "Reason: Worker failed to boot." and a worker's end; not an
// access line.
func TestFlightRecordKeepsGunicornsReasons(t *testing.T) {
	host, _ := os.Hostname()
	cfg := config{ReportDir: t.TempDir(), StopBudget: 8 * time.Second, Thresholds: postmortem.DefaultThresholds()}
	out := output.NewWriter(io.Discard, io.Discard, "json", time.Now)
	ps := newParts(out)
	reports := newReportQueue(postmortem.NewStore(cfg.ReportDir, postmortem.Retention{}), out, ps)
	flight := startFlight(cfg, out, ps, reports, gunicorn.Settings{Timeout: 30}, memwatch.Stats{}, time.Now())
	flight.awaitRecovery()
	fl := newFleet(out, ps, probes.NewFS(t.TempDir()), gunicorn.Settings{Timeout: 30}, false)
	eng := engine.New(engine.Config{Settings: gunicorn.Settings{Timeout: 30, LogLevel: "info"}, Thresholds: postmortem.DefaultThresholds(),
		Reports: reports, History: time.Minute, Interval: time.Hour, Journal: flight}, fl)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { eng.Run(ctx); close(done) }()
	keep := []string{"Worker (pid:101) exited with code 3", "Reason: Worker failed to boot.", "Reason: App failed to load."}
	drop := []string{"Shutting down: Master", `127.0.0.1 - - "GET / HTTP/1.1" 200 2`}
	for _, msg := range append(keep, drop...) {
		eng.Line("stderr", []byte(fmt.Sprintf("[2026-11-25 06:00:00 +0000] [100] [INFO] %s", msg)))
	}
	cancel()
	<-done
	drain(flight.q)

	rec, err := flightrec.Previous(cfg.ReportDir, host)
	if err != nil || rec == nil {
		t.Fatalf("the record: %v %v", rec, err)
	}
	var got []string
	for _, l := range rec.Lines {
		got = append(got, l.Text)
	}
	all := strings.Join(got, "\n")
	for _, want := range keep {
		if !strings.Contains(all, want) {
			t.Errorf("the record lacks %q; it has:\n%s", want, all)
		}
	}
	for _, not := range drop {
		if strings.Contains(all, not) {
			t.Errorf("the record keeps %q, a line it does not record:\n%s", not, all)
		}
	}
	flight.finish(time.Now().Add(5 * time.Second))
}

// TestFlightRecordIsTheEnginesJournal: what the engine takes reaches the flight record as gwrap
// wires it (Config.Journal), with no copy made by gwrap's producers: a sweep's cgroup sample and
// worker samples, an event outside a sweep, a signal, an OOM kill; a followed dirty worker's
// stack (EventStack) is not kept (flightrec's filter).
func TestFlightRecordIsTheEnginesJournal(t *testing.T) {
	host, _ := os.Hostname()
	cfg := config{ReportDir: t.TempDir(), StopBudget: 8 * time.Second, Thresholds: postmortem.DefaultThresholds()}
	out := output.NewWriter(io.Discard, io.Discard, "json", time.Now)
	ps := newParts(out)
	reports := newReportQueue(postmortem.NewStore(cfg.ReportDir, postmortem.Retention{}), out, ps)
	flight := startFlight(cfg, out, ps, reports, gunicorn.Settings{Timeout: 30}, memwatch.Stats{}, time.Now())
	flight.awaitRecovery()
	fl := newFleet(out, ps, probes.NewFS(t.TempDir()), gunicorn.Settings{Timeout: 30}, false)
	eng := engine.New(engine.Config{Settings: gunicorn.Settings{Timeout: 30, LogLevel: "info"}, Thresholds: postmortem.DefaultThresholds(),
		Reports: reports, History: time.Minute, Interval: time.Hour, Journal: flight}, fl)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { eng.Run(ctx); close(done) }()

	at := time.Now()
	w := probes.ID{PID: 101, StartTime: 5}
	sample := probes.Sample{Time: at, State: "S", RSSAnon: 40 << 20, Heartbeats: true}
	eng.Sweep(&memwatch.Stats{Time: at, WorkingSet: memwatch.Value{V: 300 << 20, Known: true}, Limit: memwatch.Value{V: 512 << 20, Known: true}},
		[]probes.Event{{Kind: probes.EventSample, ID: w, Time: at, Sample: sample}, {Kind: probes.EventStack, ID: w, Time: at, Sample: sample}})
	eng.Probe(probes.Event{Kind: probes.EventVanish, ID: w, Time: at.Add(time.Second), Sample: sample})
	eng.Signal(syscall.SIGHUP, true)
	eng.OOM(memwatch.OOMEvent{Time: at.Add(2 * time.Second), Count: 1, Total: 1})
	cancel()
	<-done
	drain(flight.q)

	rec, err := flightrec.Previous(cfg.ReportDir, host)
	if err != nil || rec == nil {
		t.Fatalf("the record: %v %v", rec, err)
	}
	if len(rec.Container) != 1 || rec.Container[0].WorkingSet.V != 300<<20 {
		t.Errorf("cgroup samples %+v, want the sweep's", rec.Container)
	}
	if len(rec.Workers[w]) == 0 {
		t.Errorf("no sample of worker %v in the record", w)
	}
	if len(rec.Events) != 1 || rec.Events[0].Kind != probes.EventVanish {
		t.Errorf("events %+v, want the vanish event alone (no stack)", rec.Events)
	}
	if len(rec.Signals) != 1 || rec.Signals[0].Name != "SIGHUP" || !rec.Signals[0].Forwarded {
		t.Errorf("signals %+v, want SIGHUP forwarded", rec.Signals)
	}
	if len(rec.OOMs) != 1 || rec.OOMs[0].Count != 1 {
		t.Errorf("OOM kills %+v, want one", rec.OOMs)
	}
	flight.finish(time.Now().Add(5 * time.Second))
	reports.finish(time.Now().Add(5 * time.Second)) // the OOM kill's report
}
