package pystack

import "testing"

func TestIsApp(t *testing.T) {
	for file, want := range map[string]bool{
		"/app/orders.py":                                     true,
		"/srv/site/app/views.py":                             true,
		"/home/u/proj/main.py":                               true,
		"/usr/lib/python3.11/socket.py":                      false,
		"/usr/local/lib/python3.12/threading.py":             false,
		"/root/.pyenv/versions/3.11.7/lib/python3.11/ssl.py": false,
		"/usr/lib/python3/dist-packages/gunicorn/arbiter.py": false,
		"/venv/lib/python3.11/site-packages/requests/api.py": false,
		"/usr/bin/gunicorn":                                  false,
		"/venv/bin/gunicorn":                                 false,
		"<frozen runpy>":                                     false,
		"<string>":                                           false,
		"???":                                                false,
		"/dev/shm/gwrap-pystack-12/sitecustomize.py":         false, // gwrap's request recording
		"/app/sitecustomize.py":                              true,
	} {
		if got := IsApp(file); got != want {
			t.Errorf("IsApp(%q) = %v, want %v", file, got, want)
		}
	}
}

func TestTop(t *testing.T) {
	app := func(line int, fn string) Frame { return Frame{"/app/orders.py", line, fn} }
	gun := Frame{"/usr/lib/python3/dist-packages/gunicorn/workers/sync.py", 179, "handle_request"}
	for _, tc := range []struct {
		name string
		st   Stack
		want string
		ok   bool
	}{
		{"app frame innermost", Stack{Threads: []Thread{{Current: true, Frames: []Frame{gun, app(80, "view"), app(88, "load_report")}}}},
			"app/orders.py:88 in load_report", true},
		{"called into a library", Stack{Threads: []Thread{{Current: true, Frames: []Frame{gun, app(88, "load_report"),
			{"/venv/lib/python3.11/site-packages/psycopg2/extras.py", 146, "execute"}, {"/usr/lib/python3.11/socket.py", 10, "recv"}}}}},
			"app/orders.py:88 in load_report (psycopg2 execute)", true},
		{"called the stdlib", Stack{Threads: []Thread{{Current: true, Frames: []Frame{app(5, "f"), {"/usr/lib/python3.11/http/client.py", 1, "getresponse"}}}}},
			"app/orders.py:5 in f (http getresponse)", true},
		{"main thread first, then others", Stack{Threads: []Thread{
			{ID: "0x1", Frames: []Frame{app(1, "other")}},
			{ID: "0x2", Current: true, Frames: []Frame{app(2, "main")}}}},
			"app/orders.py:2 in main", true},
		{"a request thread when the main thread has no app frame", Stack{Threads: []Thread{
			{ID: "0x1", Frames: []Frame{gun}},
			{ID: "0x3", Frames: []Frame{gun, app(3, "req")}},
			{ID: "0x2", Current: true, Frames: []Frame{{"/usr/lib/python3.11/selectors.py", 468, "select"}}}}},
			"app/orders.py:3 in req", true},
		{"idle worker", Stack{Threads: []Thread{{Current: true, Frames: []Frame{{"/usr/bin/gunicorn", 33, "<module>"}, gun}}}}, "", false},
		{"top-level file", Stack{Threads: []Thread{{Current: true, Frames: []Frame{{"main.py", 0, "f"}}}}}, "main.py:? in f", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top, ok := tc.st.Top()
			if ok != tc.ok || (ok && top.String() != tc.want) {
				t.Errorf("Top = %q, %v; want %q, %v", top.String(), ok, tc.want, tc.ok)
			}
		})
	}
}
