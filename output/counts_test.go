package output

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/metrics"
	"github.com/gwrap/gwrap/postmortem"
)

// port records which of Port's methods a fact reached.
type port struct{ called []string }

func (p *port) Verdict(engine.Event, engine.Verdict)   { p.called = append(p.called, "Verdict") }
func (p *port) OOMKill(engine.Event, engine.OOMKill)   { p.called = append(p.called, "OOMKill") }
func (p *port) Late(engine.Event, engine.Late)         { p.called = append(p.called, "Late") }
func (p *port) Boot(engine.Event, engine.Boot)         { p.called = append(p.called, "Boot") }
func (p *port) Recycled(engine.Event, engine.Recycled) { p.called = append(p.called, "Recycled") }
func (p *port) DirtyTimeout(engine.Event, engine.DirtyTimeout) {
	p.called = append(p.called, "DirtyTimeout")
}
func (p *port) Warning(engine.Event, engine.Warning) { p.called = append(p.called, "Warning") }
func (p *port) GunicornVersion(engine.Event, engine.GunicornVersion) {
	p.called = append(p.called, "GunicornVersion")
}

// TestEveryFactReachesAnOutput: each kind of fact the engine tells (engine.Facts) reaches its own
// method of the port, every method of the port is reached by a fact, and each fact, emitted
// through Fan, changes what it must: a counter or gauge of /metrics, the termination message, or
// stdout's warn-once registry. A fact added to the engine without an output here fails (a Port
// method without an implementation does not compile).
func TestEveryFactReachesAnOutput(t *testing.T) {
	var p port
	for _, f := range engine.Facts() {
		f.Tell(&p, engine.Event{})
	}
	methods := map[string]bool{}
	pt := reflect.TypeOf((*engine.Port)(nil)).Elem()
	for i := range pt.NumMethod() {
		methods[pt.Method(i).Name] = true
	}
	for _, c := range p.called {
		if !methods[c] {
			t.Errorf("a fact reached %s, not a method of Port", c)
		}
		delete(methods, c)
	}
	for m := range methods {
		t.Errorf("no fact of engine.Facts reaches Port.%s", m)
	}

	at := time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC)
	// What each kind of fact must change, given a fact of that kind with values.
	cases := map[string]struct {
		fact engine.Fact
		want []string // in /metrics (or the termination message, prefixed "term:", or stdout, "stdout:")
	}{
		"Verdict": {engine.Verdict{Cause: string(postmortem.CauseCPUBound), PID: 7, Summary: "busy", Role: postmortem.RoleDirty},
			[]string{`gwrap_worker_kills_total{cause="cpu_bound",role="dirty"} 1`, "term:cpu_bound pid 7"}},
		"OOMKill":         {engine.OOMKill{Count: 2}, []string{"gwrap_oom_kills_total 2"}},
		"Late":            {engine.Late{Share: 0.8}, []string{`gwrap_worker_late_total{role="http",share="0.8"} 1`}},
		"Boot":            {engine.Boot{Role: postmortem.RoleDirty}, []string{`gwrap_workers_started_total{role="dirty"} 1`}},
		"Recycled":        {engine.Recycled{Reason: "container_memory"}, []string{`gwrap_worker_recycles_total{reason="container_memory"} 1`}},
		"GunicornVersion": {engine.GunicornVersion{Version: "26.2.2"}, []string{`version="26.2.2"`}},
		"DirtyTimeout":    {engine.DirtyTimeout{Timeout: 45 * time.Second}, []string{`gwrap_gunicorn_timeout_seconds{role="dirty"} 45`}},
		"Warning":         {engine.Warning{Key: "k", Code: "some_code"}, []string{`stdout:"code":"some_code"`}},
	}
	for _, f := range engine.Facts() {
		name := reflect.TypeOf(f).Name()
		c, ok := cases[name]
		if !ok {
			t.Errorf("fact %s: no output is checked for it here", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			var stdout bytes.Buffer
			w := NewWriter(&stdout, io.Discard, "json", func() time.Time { return at })
			m := metrics.New(metrics.Options{Version: "test", Causes: postmortem.CauseNames(), LateShares: []float64{0.5, 0.8}})
			counts := NewCounts(w, m, gunicorn.Settings{Timeout: 30}, nil)
			fan := Fan{W: w, C: counts}
			before := exposition(t, m)
			e := engine.Event{Time: at, Level: engine.Warn, Name: "x", Message: "m", Fields: []engine.Field{{Key: "code", Value: "some_code"}}, Fact: c.fact}
			fan.Emit(e)
			if _, ok := c.fact.(engine.Warning); ok {
				fan.Emit(e) // said once
			}
			path := filepath.Join(t.TempDir(), "termination-log")
			counts.WriteTerm(path, "exit", true)
			term, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			w.Finish(func() {}, time.Second, io.Discard)
			after := exposition(t, m)
			for _, want := range c.want {
				switch {
				case strings.HasPrefix(want, "term:"):
					if !strings.Contains(string(term), strings.TrimPrefix(want, "term:")) {
						t.Errorf("the termination message lacks %q:\n%s", want, term)
					}
				case strings.HasPrefix(want, "stdout:"):
					if n := strings.Count(stdout.String(), strings.TrimPrefix(want, "stdout:")); n != 1 {
						t.Errorf("stdout has %q %d times, want once:\n%s", want, n, stdout.String())
					}
				default:
					if strings.Contains(before, want) || !strings.Contains(after, want) {
						t.Errorf("/metrics: %q not set by the fact; after:\n%s", want, after)
					}
				}
			}
		})
	}
}

func exposition(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}
