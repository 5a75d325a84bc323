package main

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWatchMastersFollowsANewMaster: after a USR2 upgrade the watcher is restarted on the new
// master, the old run is stopped first, and a failed run waits for the next master.
func TestWatchMastersFollowsANewMaster(t *testing.T) {
	masters := make(chan int, 4)
	started := make(chan int, 4)
	stopped := make(chan int, 4)
	run := func(ctx context.Context, pid int) error {
		started <- pid
		if pid == 2 {
			return errors.New("master 2 unreadable")
		}
		<-ctx.Done()
		stopped <- pid
		return nil
	}
	var reported []error
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		watchMasters(ctx, masters, run, func(err error) { reported = append(reported, err) })
		close(done)
	}()
	masters <- 1
	if got := <-started; got != 1 {
		t.Fatalf("started %d", got)
	}
	masters <- 2
	if got := <-stopped; got != 1 {
		t.Fatalf("stopped %d before starting 2", got)
	}
	if got := <-started; got != 2 {
		t.Fatalf("started %d", got)
	}
	masters <- 3
	if got := <-started; got != 3 {
		t.Fatalf("started %d", got)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("watchMasters did not return")
	}
	if got := <-stopped; got != 3 {
		t.Fatalf("stopped %d", got)
	}
	if len(reported) != 1 {
		t.Errorf("reported %v", reported)
	}
}

func TestParseConfigFlagsWinOverEnv(t *testing.T) {
	env := map[string]string{"GWRAP_STOP_BUDGET": "20s", "GWRAP_REPORT_DIR": "/r", "GWRAP_NEAR_LIMIT": "0.8"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	c, err := parseConfig([]string{"--stop-budget", "3s", "--", "gunicorn", "app:app"}, lookup, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.StopBudget != 3*time.Second || c.ReportDir != "/r" || c.Thresholds.NearLimit != 0.8 || len(c.Command) != 2 {
		t.Errorf("%+v", c)
	}
}
