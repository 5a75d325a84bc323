package postmortem

import (
	"fmt"
	"strings"
)

// Request is one request the worker was serving when it died, as its request file showed it
// (package inflight): every string already escaped and bounded, the query as --request-query
// keeps it.
type Request struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Query  string `json:"query,omitempty"`
	Remote string `json:"remote,omitempty"`
	// AgeSeconds is how long it had run at the death (for a cut request, until it was cut).
	AgeSeconds float64 `json:"age_s"`
	// Thread is the thread serving it as faulthandler names it in a stack ("0x00007f…").
	Thread string `json:"thread,omitempty"`
	// Cut: the request did not end normally: Gunicorn's SIGABRT (or a SystemExit) ended it.
	Cut bool `json:"cut,omitempty"`
}

// String is "GET /sleep/30?token=… from 127.0.0.1".
func (r Request) String() string {
	s := r.Method + " " + r.Path
	if r.Query != "" {
		s += "?" + r.Query
	}
	if r.Remote != "" {
		s += " from " + r.Remote
	}
	return s
}

// Running is "GET /sleep/30 from 127.0.0.1, running 31.2 s".
func (r Request) Running() string {
	return fmt.Sprintf("%s, running %.1f s", r.String(), r.AgeSeconds)
}

// maxNamed bounds the requests a summary names (a gthread or gevent worker may serve many).
const maxNamed = 3

// requestWords is the summary's sentence on the requests the worker was serving: "It was serving
// GET /sleep/30 from 127.0.0.1, running 31.2 s when Gunicorn killed it." ("" when none).
func requestWords(f Facts, d Decision) string {
	if len(f.Requests) == 0 {
		return ""
	}
	var when string
	switch {
	case d.Cause == CauseOOMKilled:
		when = " when the OOM killer killed it"
	case f.TimeoutLogged || f.TimeoutInferred || f.Escalated:
		when = " when Gunicorn killed it"
	default:
		when = " when it died"
	}
	named := make([]string, 0, maxNamed)
	for i, r := range f.Requests {
		if i == maxNamed {
			break
		}
		named = append(named, r.Running())
	}
	s := "It was serving " + strings.Join(named, "; ")
	if n := len(f.Requests) - len(named); n > 0 {
		s += fmt.Sprintf(" and %d more", n)
	}
	return s + when + "."
}
