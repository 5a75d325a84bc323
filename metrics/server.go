package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Server serves /metrics. It is an actor: Listen binds at start-up (so a bad address is a
// warning before anything runs), Serve runs until its context ends. Its failure must never
// stop Gunicorn's supervision: the caller logs it and carries on.
type Server struct {
	ln  net.Listener
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
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "gwrap: metrics at /metrics")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10}
	return &Server{ln: ln, srv: srv}, nil
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
