package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
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
		Reports: reports, History: time.Minute, Interval: time.Hour}, recorded{fl, flight, ps})
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
