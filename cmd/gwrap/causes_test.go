package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/output"
	"github.com/gwrap/gwrap/postmortem"
	"github.com/gwrap/gwrap/probes"
)

// TestCausesReachEveryOutput: each of postmortem's causes, reported, is counted under its own
// label in gwrap_worker_kills_total and gwrap_dirty_execution_timeouts_total (not as unknown),
// and the termination message ranks the verdicts in the vocabulary's order, before any string
// that is no cause. A cause that an output was not handed fails here; one without words fails
// postmortem's TestEveryCauseIsSaid.
func TestCausesReachEveryOutput(t *testing.T) {
	newFl := func() *fleet {
		out := output.NewWriter(io.Discard, io.Discard, "json", time.Now)
		return newFleet(out, newParts(out), probes.NewFS(t.TempDir()), gunicorn.Settings{Timeout: 30}, true)
	}
	verdict := func(fl *fleet, at time.Time, c string, pid int, kind string) {
		fl.Emit(engine.Event{Time: at, Name: "postmortem", Message: "m", Fields: []engine.Field{
			{Key: "cause", Value: c}, {Key: "pid", Value: pid}, {Key: "kind", Value: kind}, {Key: "summary", Value: "s"}},
			Fact: engine.Verdict{Cause: c, PID: pid, Summary: "s", ExecTimeout: kind == "execution_timeout"}})
	}
	causes := postmortem.Causes()
	t0 := time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC)

	fl := newFl()
	for i, c := range causes {
		verdict(fl, t0, string(c), 100+i, "timeout")
		verdict(fl, t0, string(c), 200+i, "execution_timeout")
	}
	text := exposition(t, fl)
	for _, c := range causes {
		for _, want := range []string{
			fmt.Sprintf(`gwrap_worker_kills_total{cause="%s",role="http"} 1`, c),
			fmt.Sprintf(`gwrap_dirty_execution_timeouts_total{cause="%s"} 1`, c),
		} {
			if !strings.Contains(text, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	}

	// The message keeps the last 8 verdicts: every cause but the first, least important first
	// (the message reorders them), and a string that is no cause, the latest of all, which
	// must come after every cause.
	fl = newFl()
	for i := len(causes) - 1; i >= 1; i-- {
		verdict(fl, t0.Add(time.Duration(i)*time.Second), string(causes[i]), 100+i, "timeout")
	}
	verdict(fl, t0.Add(time.Hour), "not_a_cause", 99, "timeout")
	path := filepath.Join(t.TempDir(), "termination-log")
	fl.counts.WriteTerm(path, "exit", true)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	msg := string(b)
	at := -1
	for _, c := range append(causes[1:], "not_a_cause") {
		i := strings.Index(msg, fmt.Sprintf("Z %s pid", c))
		if i < 0 {
			t.Errorf("the termination message lacks %s:\n%s", c, msg)
		}
		if i >= 0 && i < at {
			t.Errorf("%s is ranked out of the vocabulary's order:\n%s", c, msg)
		}
		at = max(at, i)
	}
}
