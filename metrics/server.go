package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server serves /metrics. It is an actor: Listen binds at start-up (so a bad address is a
// warning before anything runs), Serve runs until its context ends. Its failure must never
// stop Gunicorn's supervision: the caller logs it and carries on.
type Server struct {
	ln  *connLimit
	srv *http.Server
}

// Listen binds addr (":9191", "127.0.0.1:9191") for m's registry.
func Listen(addr string, m *Metrics) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError, // a failed collector costs its series, not the scrape
		MaxRequestsInFlight: 4,                        // a scrape storm is refused (503), not queued
		Timeout:             5 * time.Second,
		// The exposition is a few KiB: gzip (which Prometheus asks for) would cost a compressor
		// of about a MiB per scrape and more CPU than the bytes it saves.
		DisableCompression: true,
	}))
	if m.opt.Status != nil {
		mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) { serveStatus(w, m.opt.Status) })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "gwrap: metrics at /metrics")
	})
	lim := &connLimit{Listener: ln, max: MaxConns, conns: map[net.Conn]*tracked{}}
	srv := &http.Server{Handler: http.MaxBytesHandler(mux, maxBody), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10, ConnState: lim.state}
	return &Server{ln: lim, srv: srv}, nil
}

// MaxConns bounds the connections the server holds at once: Prometheus keeps one per target, a
// few scrapers and a curl fit. Each costs a goroutine and its buffers in PID 1, so a flood of idle
// connections must not grow with the flood: past the bound, the oldest connection that is not in
// a request (none of its request read yet, or idle between two) is closed for the new one, so a
// scraper that sends its request at once is still answered; when every held connection is in a
// request, the new one is closed.
const MaxConns = 16

// maxBody bounds what a request may send: /metrics takes no body.
const maxBody = 4 << 10

// connLimit is the listener that keeps the server within MaxConns connections.
type connLimit struct {
	net.Listener
	max int

	mu    sync.Mutex
	conns map[net.Conn]*tracked
	seq   uint64
}

// tracked is a held connection: its order of arrival and its state as http.Server reports it.
type tracked struct {
	seq   uint64
	state http.ConnState
}

// Accept returns the next connection, making room for it first.
func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if len(l.conns) >= l.max && !l.evictLocked() {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.seq++
		l.conns[c] = &tracked{seq: l.seq, state: http.StateNew}
		l.mu.Unlock()
		return c, nil
	}
}

// evictLocked closes the oldest held connection that is not in a request; false when all are.
func (l *connLimit) evictLocked() bool {
	var victim net.Conn
	var seq uint64
	for c, t := range l.conns {
		if (t.state == http.StateNew || t.state == http.StateIdle) && (victim == nil || t.seq < seq) {
			victim, seq = c, t.seq
		}
	}
	if victim == nil {
		return false
	}
	victim.Close()
	delete(l.conns, victim)
	return true
}

// state is http.Server.ConnState: it follows each held connection.
func (l *connLimit) state(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case http.StateClosed, http.StateHijacked:
		delete(l.conns, c)
	default:
		if t, ok := l.conns[c]; ok {
			t.state = s
		}
	}
}

// held is how many connections the server holds (for tests).
func (l *connLimit) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Addr is the bound address (with the port chosen for ":0").
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers scrapes until ctx is done, then shuts down within one second (in-flight
// scrapes are cut after that). It returns nil on a clean stop.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve: %w", err)
	}
	return nil
}

// serveStatus answers /status with status()'s JSON, or 503 and the error.
func serveStatus(w http.ResponseWriter, status func() (any, error)) {
	v, err := status()
	if err != nil {
		http.Error(w, "gwrap: no status: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "gwrap: no status: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}
