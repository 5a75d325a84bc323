package postmortem

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/internal/testkit"
	"github.com/gwrap/gwrap/memwatch"
	"github.com/gwrap/gwrap/probes"
)

func sampleReport(pid int, at time.Time) Report {
	s := gunicorn.Defaults()
	s.Timeout = 10
	inc := Incident{Kind: KindTimeout, PID: pid, At: at, Timeout: true, Vanished: true,
		Lines: []string{"[2026-11-25 03:42:36 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:7)"}}
	e := Evidence{Incident: inc, Settings: s, Timeline: silence(11, 99, "R", 80<<20), Container: cgroup(11, 300<<20, 512<<20, 0, 0)}
	return NewReport(e, Classify(e, DefaultThresholds()), "22.0.0", at)
}

// pressureReport is a worker that grew towards the container's limit and timed out there: its
// charts have something to show.
func pressureReport() Report {
	s := gunicorn.Defaults()
	s.Timeout, s.Workers = 30, 3
	const mb = 1 << 20
	var tl []probes.Sample
	var cg []memwatch.Stats
	for i := 0; i <= 60; i++ {
		at := t0.Add(time.Duration(i-60) * time.Second)
		age := time.Duration(max(0, i-29)) * time.Second
		tl = append(tl, probes.Sample{Time: at, RSSAnon: uint64(200+12*i) * mb, CPUUser: 20 + float64(i%7)*4, State: "D",
			HeartbeatAge: age, Heartbeats: true, RunDelayPct: float64(i % 5)})
		cg = append(cg, memwatch.Stats{Time: at, Version: 1, Usage: memwatch.Value{V: uint64(400+9*i) * mb, Known: true},
			WorkingSet: memwatch.Value{V: uint64(380+9*i) * mb, Known: true}, Limit: memwatch.Value{V: 1000 * mb, Known: true},
			OOMKill: memwatch.Value{V: 0, Known: true}})
	}
	inc := Incident{Kind: KindTimeout, PID: 4242, At: t0, Timeout: true, Vanished: true, Escalated: true, Signal: "SIGKILL", OOMHint: true,
		Lines: []string{"[2026-11-25 03:42:36 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:4242)",
			"[2026-11-25 03:42:37 +0000] [1] [ERROR] Worker (pid:4242) was sent SIGKILL! Perhaps out of memory?"}}
	e := Evidence{Incident: inc, Settings: s, Timeline: tl, Container: cg}
	r := NewReport(e, Classify(e, DefaultThresholds()), "23.0.0", t0)
	r.Host = Host{Hostname: "web-1", GwrapVersion: "0.1.0"}
	return r
}

func TestStoreWriteReadRetention(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "reports")
	s := NewStore(dir, Retention{MaxCount: 3})
	var ids []string
	for i := 0; i < 5; i++ {
		r := sampleReport(100+i, t0.Add(time.Duration(i)*time.Second))
		path, err := s.Write(r)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
		st, _ := os.Stat(path)
		if st.Mode().Perm() != 0o640 {
			t.Errorf("report mode %v, want 0640", st.Mode().Perm())
		}
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o750 {
		t.Errorf("dir mode %v, want 0750", st.Mode().Perm())
	}
	list, err := s.List()
	if err != nil || len(list) != 3 || list[0].ID != ids[2] || list[2].Cause != CauseCPUBound {
		t.Fatalf("list %+v %v", list, err)
	}
	latest, err := s.Latest()
	if err != nil || latest.ID != ids[4] || latest.Verdict.Cause != CauseCPUBound {
		t.Fatalf("latest %v %v", latest.ID, err)
	}
	if _, err := s.Get(ids[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("retention kept %s: %v", ids[0], err)
	}
	if _, err := s.Get("../etc/passwd"); !errors.Is(err, ErrNotFound) {
		t.Errorf("path traversal: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temp file left: %s", e.Name())
		}
	}
	if len(ents) != 6 {
		t.Errorf("%d files, want 3 JSON + 3 HTML", len(ents))
	}
}

func TestStoreRetentionByBytes(t *testing.T) {
	dir := t.TempDir()
	one := sampleReport(1, t0)
	s := NewStore(dir, Retention{})
	if _, err := s.Write(one); err != nil {
		t.Fatal(err)
	}
	list, _ := s.List()
	js, _ := os.Stat(list[0].Path)
	html, _ := os.Stat(strings.TrimSuffix(list[0].Path, ".json") + ".html")
	size := js.Size() + html.Size()
	s = NewStore(dir, Retention{MaxBytes: 2*size + size/2})
	for i := 1; i < 4; i++ {
		if _, err := s.Write(sampleReport(1+i, t0.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	if list, _ := s.List(); len(list) != 2 {
		t.Errorf("%d reports kept under a %d-byte bound of ~%d-byte reports", len(list), 2*size+size/2, size)
	}
}

func TestStoreReadOnlyDir(t *testing.T) {
	if os.Geteuid() == 0 {
		// root ignores permissions: use a path under a regular file instead.
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, nil, 0o644)
		if _, err := NewStore(filepath.Join(f, "reports"), Retention{}).Write(sampleReport(1, t0)); err == nil {
			t.Error("writing under a file succeeded")
		}
		return
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o500)
	if _, err := NewStore(dir, Retention{}).Write(sampleReport(1, t0)); err == nil {
		t.Error("writing to a read-only dir succeeded")
	}
}

func TestRedactArgs(t *testing.T) {
	got := RedactArgs([]string{"gunicorn", "--db-password", "hunter2", "--api-token=abc", "--bind", "0.0.0.0:80",
		"postgres://u:pw@db/x", "--env", "STRIPE_KEY=sk_live_1", "-e", "DATABASE_URL=redis://:pw2@cache:6379/0", "--secret-key", "s3",
		"--keep-alive", "5", "--workers", "3", "app:app"})
	want := []string{"gunicorn", "--db-password", hidden, "--api-token=" + hidden, "--bind", "0.0.0.0:80",
		"postgres://u:" + hidden + "@db/x", "--env", "STRIPE_KEY=" + hidden, "-e", "DATABASE_URL=redis://:" + hidden + "@cache:6379/0", "--secret-key", hidden,
		"--keep-alive", "5", "--workers", "3", "app:app"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestRedactText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"connect failed password=s3cret host=db", "connect failed password=" + hidden + " host=db"},
		{"url=https://bob:pw@example.com/a", "url=https://bob:" + hidden + "@example.com/a"},
		{"token: xyz", "token: " + hidden},
		{`conf = {'password': 'hunter2', 'user': 'bob'}`, `conf = {'password': ` + hidden + `, 'user': 'bob'}`},
		{`{"api_key":"abc123","n":1}`, `{"api_key":` + hidden + `,"n":1}`},
		{"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "Authorization: " + hidden + " " + hidden},
		{"GET https://acct.blob.core.windows.net/c/b?sv=2022&sig=AbC%2Bd&se=1", "GET https://acct.blob.core.windows.net/c/b?sv=2022&sig=" + hidden + "&se=1"},
		{"POST /api/hook?code=fnkey123==", "POST /api/hook?code=" + hidden},
		// dict-form signatures and tokens, session cookies
		{`params = {"sig": "AbC%2Bd", "signature": "xyz", "token": "t0k"}`, `params = {"sig": ` + hidden + `, "signature": ` + hidden + `, "token": ` + hidden + `}`},
		{`{'sig': 'abc'}`, `{'sig': ` + hidden + `}`},
		{"Cookie: sessionid=9f8e7d6c; theme=dark", "Cookie: sessionid=" + hidden + "; theme=dark"},
		{"Set-Cookie: session=eyJ1c2VyIjo; Path=/", "Set-Cookie: session=" + hidden + "; Path=/"},
		{"JSESSIONID=ABC123", "JSESSIONID=" + hidden},
		{`{"signal": "SIGKILL", "design": "x", "session_count": 3}`, `{"signal": "SIGKILL", "design": "x", "session_count": 3}`},
		// not secrets: left as they are
		{"KeyError: 'user_id'", "KeyError: 'user_id'"},
		{"psycopg2.OperationalError: FATAL:  password authentication failed for user \"app\"", "psycopg2.OperationalError: FATAL:  password authentication failed for user \"app\""},
		{"[2026-11-25 03:42:36 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:7)", "[2026-11-25 03:42:36 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:7)"},
		{`  File "/srv/app/keys.py", line 4, in auth_check`, `  File "/srv/app/keys.py", line 4, in auth_check`},
	} {
		if got := redact(tc.in); got != tc.want {
			t.Errorf("redact(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestHTMLSelfContained(t *testing.T) {
	r := pressureReport()
	r.Incident.Lines = append(r.Incident.Lines, `[2026-11-25 03:42:36 +0000] [7] [ERROR] Error handling request /x?q=<script>alert(1)</script>`)
	var b bytes.Buffer
	if err := WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	h := b.String()
	if !strings.HasPrefix(h, "<!doctype html>") || !strings.HasSuffix(strings.TrimSpace(h), "</html>") {
		t.Error("not a whole page")
	}
	if strings.Count(h, "<svg") != 3 || strings.Count(h, "</svg>") != 3 || strings.Count(h, "<polyline") != 7 {
		t.Errorf("charts: %d svg, %d polylines; want 3 and 7 (RSS, working set, limit; CPU, run queue; silence, timeout)",
			strings.Count(h, "<svg"), strings.Count(h, "<polyline"))
	}
	for _, want := range []string{"memory_pressure", r.Verdict.Summary[:40], "incident", "Gunicorn timeout", "container limit"} {
		if !strings.Contains(h, template.HTMLEscapeString(want)) {
			t.Errorf("the page lacks %q", want)
		}
	}
	for _, bad := range []string{"src=", "href=", "url(", "@import", "<script", "<link"} {
		if strings.Contains(strings.ToLower(h), bad) {
			t.Errorf("%q in the page: it must need nothing from outside and run nothing", bad)
		}
	}
}

// TestHTMLRendersInChromium opens a report in headless Chromium and checks its charts are in the
// rendered DOM, and writes a screenshot to look at (GWRAP_SCREENSHOT=path keeps it).
func TestHTMLRendersInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		testkit.Unavailable(t, "chromium is not installed (apt-get install chromium)")
	}
	dir := t.TempDir()
	path, err := NewStore(dir, Retention{}).Write(pressureReport())
	if err != nil {
		t.Fatal(err)
	}
	html := "file://" + strings.TrimSuffix(path, ".json") + ".html"
	flags := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--user-data-dir=" + filepath.Join(dir, "profile")}
	out, err := exec.Command(chromium, append(flags, "--dump-dom", html)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	dom := string(out)
	if strings.Count(dom, "<svg") != 3 || !strings.Contains(dom, "memory_pressure") || strings.Count(dom, "<polyline") < 6 {
		t.Errorf("rendered DOM lacks the charts or verdict:\n%.500s", dom)
	}
	shot := os.Getenv("GWRAP_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(dir, "report.png")
	}
	if err := exec.Command(chromium, append(flags, "--screenshot="+shot, "--window-size=1200,1600", html)...).Run(); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if st, err := os.Stat(shot); err != nil || st.Size() < 10000 {
		t.Errorf("screenshot %s: %v", shot, err)
	}
}

func ExampleWriteText() {
	s := gunicorn.Defaults()
	s.Timeout = 10
	code := 7
	e := Evidence{Incident: Incident{Kind: KindExit, PID: 42, At: t0, ExitCode: &code}, Settings: s}
	r := NewReport(e, Classify(e, DefaultThresholds()), "22.0.0", t0)
	r.Host = Host{Hostname: "web-1", GwrapVersion: "0.1.0"}
	WriteText(os.Stdout, r)
	// Output:
	// Report 20261125T034236.000Z-42
	// Worker 42, exit at 2026-11-25T03:42:36Z
	//
	// Cause: crashed (confidence high)
	// Near the memory limit: no. Ran long: no.
	//
	// Worker 42 exited with code 7: the app or a library ended the process.
	//
	// Evidence:
	//   - the worker exited with code: 7
	//
	// Missing evidence: container memory (cgroup unreadable); heartbeat age; worker samples; the cgroup's oom_kill counter
	//
	// Advice:
	//   - look at the worker's last log lines and its traceback in this report
	//
	// Gunicorn 22.0.0: timeout 10 s, workers 1, class sync
	// Host web-1, gwrap 0.1.0
}

// TestStoreFailedWriteLeavesNothing: when the JSON (or the page) cannot be renamed into place,
// Write fails and leaves no temp file, and no page without its JSON.
func TestStoreFailedWriteLeavesNothing(t *testing.T) {
	for _, blocked := range []string{".json", ".html"} {
		t.Run(blocked, func(t *testing.T) {
			dir := t.TempDir()
			r := sampleReport(7, t0)
			if err := os.Mkdir(filepath.Join(dir, r.ID+blocked), 0o750); err != nil {
				t.Fatal(err)
			}
			path, err := NewStore(dir, Retention{}).Write(r)
			if err == nil || path != "" {
				t.Fatalf("write over a directory: %q, %v", path, err)
			}
			if !strings.Contains(err.Error(), dir) {
				t.Errorf("the error does not name the path: %v", err)
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 1 || ents[0].Name() != r.ID+blocked {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Errorf("left behind: %q", names)
			}
		})
	}
}

// TestStoreRemovesOldLeftovers: temp files of a cut-short write and pages without their JSON go
// once they are old; fresh ones (another instance writing to a shared dir) stay.
func TestStoreRemovesOldLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := NewStore(dir, Retention{})
	now := time.Now()
	s.now = func() time.Time { return now }
	old := now.Add(-leftoverAge - time.Minute)
	files := map[string]bool{ // name → should survive
		".20261125T000000.000Z-1.json.tmp-123": false,
		"20261125T000000.000Z-2.html":          false,
		".20261125T000000.000Z-3.json.tmp-456": true,
		"20261125T000000.000Z-4.html":          true,
		"notes.txt":                            true,
	}
	page := []byte("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>gwrap post-mortem: worker 2 timeout</title>")
	for n, fresh := range files {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, page, 0o640); err != nil {
			t.Fatal(err)
		}
		if !fresh || n == "notes.txt" {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.Write(sampleReport(9, t0)); err != nil {
		t.Fatal(err)
	}
	for n, keep := range files {
		_, err := os.Stat(filepath.Join(dir, n))
		if (err == nil) != keep {
			t.Errorf("%s: kept %v, want %v", n, err == nil, keep)
		}
	}
}

func TestDefaultDir(t *testing.T) {
	appService := func(p string) bool { return p == "/home/LogFiles" }
	nothing := func(string) bool { return false }
	if d := DefaultDir(appService); d != "/home/LogFiles/gwrap" {
		t.Errorf("on App Service: %s", d)
	}
	if d := DefaultDir(nothing); d != "/var/log/gwrap" {
		t.Errorf("elsewhere: %s", d)
	}
}

// TestHostSuffixedIDs: the engine adds the host to a report's id (instances sharing /home); such
// reports are written, listed and read back like any other.
func TestHostSuffixedIDs(t *testing.T) {
	s := NewStore(t.TempDir(), Retention{MaxCount: 10})
	r := pressureReport()
	r.ID += "-web-7f9c_1"
	if _, err := s.Write(r); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].ID != r.ID {
		t.Fatalf("list %+v, %v", list, err)
	}
	if got, err := s.Get(r.ID); err != nil || got.ID != r.ID {
		t.Errorf("get: %v", err)
	}
}
