package main

import (
	"io"
	"testing"
)

func TestParseConfigPythonStacks(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want bool
	}{
		{nil, nil, true},
		{map[string]string{"GWRAP_PYTHON_STACKS": "false"}, nil, false},
		{map[string]string{"GWRAP_PYTHON_STACKS": "0"}, []string{"--python-stacks"}, true},
		{nil, []string{"--python-stacks=false"}, false},
	} {
		lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
		c, err := parseConfig(append(tc.args, "gunicorn", "app:app"), lookup, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.PythonStacks != tc.want {
			t.Errorf("env %v args %v: PythonStacks %v, want %v", tc.env, tc.args, c.PythonStacks, tc.want)
		}
	}
	lookup := func(k string) (string, bool) { return "maybe", k == "GWRAP_PYTHON_STACKS" }
	if _, err := parseConfig([]string{"gunicorn"}, lookup, nil); err == nil {
		t.Errorf("GWRAP_PYTHON_STACKS=maybe accepted")
	}
}

func TestParseConfigRequests(t *testing.T) {
	for _, tc := range []struct {
		env   map[string]string
		args  []string
		hook  string // pystack.Options.Requests
		query string
	}{
		{nil, nil, "names", "names"},
		{map[string]string{"GWRAP_REQUEST_QUERY": "full"}, nil, "full", "full"},
		{map[string]string{"GWRAP_REQUEST_QUERY": "full"}, []string{"--request-query", "off"}, "off", "off"},
		{map[string]string{"GWRAP_RECORD_REQUESTS": "false"}, nil, "", "names"},
		{nil, []string{"--record-requests=false", "--request-query=full"}, "", "full"},
	} {
		lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
		c, err := parseConfig(append(tc.args, "gunicorn", "app:app"), lookup, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.hookRequests() != tc.hook || c.requestQuery().String() != tc.query {
			t.Errorf("env %v args %v: hook %q, query %s; want %q, %s", tc.env, tc.args, c.hookRequests(), c.requestQuery(), tc.hook, tc.query)
		}
	}
	for _, args := range [][]string{{"--request-query", "values"}, {"--request-query", ""}, {"--record-requests=maybe"}} {
		if _, err := parseConfig(append(args, "gunicorn"), func(string) (string, bool) { return "", false }, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
