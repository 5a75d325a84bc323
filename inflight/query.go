package inflight

import (
	"fmt"
	"strings"
)

// QueryMode is how much of a query string is kept: nothing, its names (values replaced by "…"),
// or all of it. It is ordered: a stricter mode is smaller.
type QueryMode uint8

// Query modes (--request-query).
const (
	QueryOff   QueryMode = 0
	QueryNames QueryMode = 1
	QueryFull  QueryMode = 2
)

// QueryModes lists the values of --request-query.
const QueryModes = "full|names|off"

// ParseQueryMode reads a --request-query value.
func ParseQueryMode(s string) (QueryMode, error) {
	switch s {
	case "off":
		return QueryOff, nil
	case "names":
		return QueryNames, nil
	case "full":
		return QueryFull, nil
	}
	return 0, fmt.Errorf("request query %q is not one of %s", s, QueryModes)
}

func (m QueryMode) String() string {
	switch m {
	case QueryOff:
		return "off"
	case QueryNames:
		return "names"
	case QueryFull:
		return "full"
	}
	return "unknown"
}

// Ellipsis stands for what is not shown: a query value, a cut path.
const Ellipsis = "…"

// maxName is the longest query name kept (longer ones may be values in disguise).
const maxName = 64

// redact renders a recorded query under mode: off, ""; full, the query escaped; names, each
// element "name=…" or "…" (an element without "=", or with a name longer than maxName, may be a
// value: it is dropped whole). Idempotent: a query the hook recorded as names renders the same.
func redact(q []byte, mode QueryMode) string {
	if len(q) == 0 || mode == QueryOff {
		return ""
	}
	if mode == QueryFull {
		s, _ := escape(q, maxQuery)
		return s
	}
	var b strings.Builder
	for i, el := range strings.Split(string(q), "&") {
		if i > 0 {
			b.WriteByte('&')
		}
		name, _, ok := strings.Cut(el, "=")
		if !ok || len(name) > maxName {
			b.WriteString(Ellipsis)
			continue
		}
		s, _ := escape([]byte(name), maxName)
		b.WriteString(s)
		b.WriteString("=" + Ellipsis)
	}
	return b.String()
}
