package metrics

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startServer starts a server on a free loopback port for the test.
func startServer(t *testing.T, m *Metrics) *Server {
	t.Helper()
	s, err := Listen("127.0.0.1:0", m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

// dialIdle opens n connections that never send a byte.
func dialIdle(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

func scrape(addr string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	r, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, "", err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	return r.StatusCode, string(b), err
}

// TestIdleFloodIsBounded: 1,000 connections that never send a byte leave the server holding at
// most MaxConns of them, and a real scrape made during the flood is answered.
func TestIdleFloodIsBounded(t *testing.T) {
	s := startServer(t, fed())
	addr := s.Addr().String()
	dialIdle(t, addr, 1000)
	code, body, err := scrape(addr)
	if err != nil || code != 200 || !strings.Contains(body, "gwrap_worker_kills_total") {
		t.Fatalf("scrape during the flood: %d %v %.80q", code, err, body)
	}
	if n := s.ln.held(); n > MaxConns {
		t.Errorf("the server holds %d connections, bound %d", n, MaxConns)
	}
}

// TestScrapesInRequestAreNotEvicted: scrapes whose handler is running (here waiting on a slow
// Live read) are never closed to make room for a flood of idle connections: they complete.
func TestScrapesInRequestAreNotEvicted(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	m := New(Options{Live: func() (Saturation, error) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		return Saturation{}, nil
	}})
	s := startServer(t, m)
	addr := s.Addr().String()
	results := make(chan error, 3)
	for range 3 {
		go func() {
			code, _, err := scrape(addr)
			if err == nil && code != 200 {
				err = fmt.Errorf("status %d", code)
			}
			results <- err
		}()
	}
	<-entered
	deadline := time.Now().Add(5 * time.Second)
	for active(s.ln) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := active(s.ln); n < 3 {
		t.Fatalf("%d scrapes in a request, want 3", n)
	}
	dialIdle(t, addr, 200)
	close(release)
	for range 3 {
		if err := <-results; err != nil {
			t.Errorf("a scrape in a request was cut: %v", err)
		}
	}
}

// active is how many held connections are in a request.
func active(l *connLimit) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.conns {
		if c.state == http.StateActive {
			n++
		}
	}
	return n
}
