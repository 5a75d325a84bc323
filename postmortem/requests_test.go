package postmortem

import (
	"bytes"
	"strings"
	"testing"
)

// TestRequestWords: the summary's sentence names each request, its age, and who killed it.
func TestRequestWords(t *testing.T) {
	sleep := Request{Method: "GET", Path: "/sleep/30", Query: "token=…", Remote: "127.0.0.1", AgeSeconds: 31.24}
	cases := []struct {
		name string
		f    Facts
		d    Decision
		want string
	}{
		{"none", Facts{}, Decision{Cause: CauseBlocked}, ""},
		{"timeout", Facts{TimeoutLogged: true, Requests: []Request{sleep}}, Decision{Cause: CauseBlocked},
			"It was serving GET /sleep/30?token=… from 127.0.0.1, running 31.2 s when Gunicorn killed it."},
		{"oom", Facts{Requests: []Request{{Method: "POST", Path: "/hog", AgeSeconds: 2}}}, Decision{Cause: CauseOOMKilled},
			"It was serving POST /hog, running 2.0 s when the OOM killer killed it."},
		{"many", Facts{Signal: "SIGKILL", Requests: []Request{sleep, sleep, sleep, sleep, sleep}}, Decision{Cause: CauseCrashed},
			"It was serving " + strings.Repeat("GET /sleep/30?token=… from 127.0.0.1, running 31.2 s; ", 2) +
				"GET /sleep/30?token=… from 127.0.0.1, running 31.2 s and 2 more when it died."},
	}
	for _, c := range cases {
		if got := requestWords(c.f, c.d); got != c.want {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, c.want)
		}
	}
}

// TestReportShowsRequests: the text and HTML reports list the requests in flight.
func TestReportShowsRequests(t *testing.T) {
	r := Report{Schema: Schema, ID: "x", Incident: Incident{Kind: KindTimeout, PID: 7,
		Requests: []Request{{Method: "GET", Path: "/a<b>", Remote: "10.0.0.7", AgeSeconds: 4}}}}
	var txt, html bytes.Buffer
	if err := WriteText(&txt, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(txt.String(), "Requests in flight when it died:\n  - GET /a<b> from 10.0.0.7, running 4.0 s\n") {
		t.Errorf("text report:\n%s", txt.String())
	}
	if err := WriteHTML(&html, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(html.String(), "<li>GET /a&lt;b&gt; from 10.0.0.7, running 4.0 s</li>") {
		t.Errorf("HTML report does not list the request, escaped:\n%s", html.String())
	}
}
