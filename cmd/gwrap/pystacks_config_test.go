package main

import "testing"

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
