package testkit

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// LoadResult is what a steady stream of requests met.
type LoadResult struct {
	Requests int      // sent
	Failures int      // answered with an error, a status other than 200, or not at all
	Errors   []string // the first few failures, for the test's log
}

// SteadyLoad sends GET url every `every` for dur, each request on a connection of its own (no
// keep-alive: Gunicorn's sync workers close after each response) and in a goroutine of its own,
// so that a slow answer does not slow the stream; it waits for every request to end (each within
// timeout) and counts the failures.
func SteadyLoad(url string, every, dur, timeout time.Duration) LoadResult {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	var (
		mu  sync.Mutex
		res LoadResult
		wg  sync.WaitGroup
	)
	fail := func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		res.Failures++
		if len(res.Errors) < 10 {
			res.Errors = append(res.Errors, msg)
		}
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	end := time.Now().Add(dur)
	for now := time.Now(); now.Before(end); now = <-tick.C {
		res.Requests++
		wg.Add(1)
		go func(at time.Time) {
			defer wg.Done()
			resp, err := client.Get(url)
			if err != nil {
				fail(fmt.Sprintf("%s: %v", at.Format("15:04:05.000"), err))
				return
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				fail(fmt.Sprintf("%s: status %d, body: %v", at.Format("15:04:05.000"), resp.StatusCode, err))
			}
		}(now)
	}
	wg.Wait()
	return res
}
