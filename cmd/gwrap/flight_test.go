package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/flightrec"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/output"
	"github.com/gwrap/gwrap/postmortem"
)

// TestStartFlight: an unclosed record of this host becomes a previous_run report in the store and
// a postmortem event; the record startFlight opens replaces it, and once closed it explains
// nothing at the next start. An unwritable report dir is said once and starts nothing.
func TestStartFlight(t *testing.T) {
	host, _ := os.Hostname()
	cfg := config{ReportDir: t.TempDir(), StopBudget: 8 * time.Second, Thresholds: postmortem.DefaultThresholds()}
	store := postmortem.NewStore(cfg.ReportDir, postmortem.Retention{})
	events := func(b *bytes.Buffer) []map[string]any {
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
			var m map[string]any
			if l != "" && json.Unmarshal([]byte(l), &m) == nil {
				out = append(out, m)
			}
		}
		return out
	}
	limit := memwatch.Value{V: 512 << 20, Known: true}

	// A run that died: written elsewhere by a recorder that is never closed, and its segments
	// left in the report dir as a SIGKILL leaves them (no process holds their lock any more).
	var buf bytes.Buffer
	elsewhere := t.TempDir()
	first := flightrec.Open(flightrec.Options{Dir: elsewhere, Identity: flightrec.Identity{Host: host, PID: 77, Start: time.Now()}})
	defer first.Close()
	for i := 0; i < 3; i++ {
		first.Container(memwatch.Stats{Time: time.Now(), Limit: limit, WorkingSet: memwatch.Value{V: uint64(100+i) << 20, Known: true}})
	}
	for _, f := range flightrec.Files(elsewhere, host) {
		if b, err := os.ReadFile(f); err == nil {
			if err := os.WriteFile(filepath.Join(cfg.ReportDir, filepath.Base(f)), b, 0o640); err != nil {
				t.Fatal(err)
			}
		}
	}

	out := output.NewWriter(&buf, io.Discard, "json", time.Now)
	ps := newParts(out)
	reports := newReportQueue(store, out, ps)
	second := startFlight(cfg, out, ps, reports, gunicorn.Settings{Timeout: 30}, memwatch.Stats{}, time.Now())
	drain(second.q)
	drain(reports.q)
	out.Finish(func() {}, time.Second, io.Discard) // the writer has written everything
	evs := events(&buf)
	if len(evs) != 1 || evs[0]["event"] != "postmortem" || evs[0]["kind"] != "previous_run" {
		t.Fatalf("events after an unclosed record: %v", evs)
	}
	if p, _ := evs[0]["report"].(string); p == "" || filepath.Dir(p) != cfg.ReportDir {
		t.Errorf("the report is not in the store: %v", evs[0]["report"])
	} else if _, err := os.Stat(p); err != nil {
		t.Errorf("the report is not written: %v", err)
	}
	if lost := second.finish(time.Now().Add(5 * time.Second)); lost != 0 {
		t.Fatalf("%d lines lost", lost)
	}
	buf.Reset()
	out = output.NewWriter(&buf, io.Discard, "json", time.Now)
	ps = newParts(out)
	reports = newReportQueue(store, out, ps)
	third := startFlight(cfg, out, ps, reports, gunicorn.Settings{}, memwatch.Stats{}, time.Now())
	defer third.finish(time.Now().Add(5 * time.Second))
	drain(third.q)
	out.Finish(func() {}, time.Second, io.Discard)
	if evs := events(&buf); len(evs) != 0 {
		t.Errorf("a clean exit was explained: %v", evs)
	}

	// An unwritable report dir: one warning, no failure.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	bad := cfg
	bad.ReportDir = filepath.Join(file, "reports")
	buf.Reset()
	out = output.NewWriter(&buf, io.Discard, "json", time.Now)
	ps = newParts(out)
	reports = newReportQueue(postmortem.NewStore(bad.ReportDir, postmortem.Retention{}), out, ps)
	r := startFlight(bad, out, ps, reports, gunicorn.Settings{}, memwatch.Stats{}, time.Now())
	r.Sweep(&memwatch.Stats{Time: time.Now()}, nil)
	drain(r.q)
	r.finish(time.Now().Add(5 * time.Second))
	out.Finish(func() {}, time.Second, io.Discard)
	evs = events(&buf)
	if len(evs) != 2 || evs[0]["code"] != "report_dir" || !strings.Contains(evs[1]["message"].(string), "flight record") {
		t.Errorf("events for an unwritable dir: %v", evs)
	}
}

// drain waits until the queue has done every job handed over so far.
func drain(q *diskQueue) {
	done := make(chan struct{})
	if q.push(diskJob{run: func() error { close(done); return nil }}) {
		<-done
	}
}
