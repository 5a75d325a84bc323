package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// These tests try gwrap as an attacker would: its output fails, stalls or is cut, a daemon holds
// its pipes, a TERM comes while it starts, its inputs are absurd. Whatever happens, the app keeps
// being supervised and gwrap ends in bounded time.

// gwrapWithStdout starts gwrap with the given stdout (a pipe end, /dev/full…) and its stderr in a
// buffer; cleanup kills its process group.
func gwrapWithStdout(t *testing.T, stdout *os.File, env []string, args ...string) (*exec.Cmd, *testkit.Buffer, chan struct{}) {
	t.Helper()
	return startWithStdout(t, gwrapBin, stdout, env, args...)
}

// startWithStdout is gwrapWithStdout for another build of gwrap.
func startWithStdout(t *testing.T, bin string, stdout *os.File, env []string, args ...string) (*exec.Cmd, *testkit.Buffer, chan struct{}) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout = stdout
	stderr := &testkit.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(waited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-waited
	})
	return cmd, stderr, waited
}

func waitExit(t *testing.T, cmd *exec.Cmd, waited chan struct{}, d time.Duration) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	select {
	case <-waited:
	case <-time.After(d):
		t.Fatalf("gwrap did not exit within %v", d)
	}
	return cmd.ProcessState.ExitCode(), time.Since(start)
}

// stderrLines are the non-empty lines gwrap wrote on stderr.
func stderrLines(b *testkit.Buffer) []string {
	var out []string
	for _, l := range strings.Split(b.String(), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// TestStdoutReaderGone is `gwrap -- gunicorn … | head -1`: once the reader is gone, gwrap keeps
// supervising, Gunicorn keeps answering, the loss is said once on stderr, and TERM still gives
// Gunicorn's graceful stop and exit 0 (before: gwrap died of SIGPIPE, 141, leaving Gunicorn
// unsupervised).
func TestStdoutReaderGone(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, testApp)
	port := freePort(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd, stderr, waited := gwrapWithStdout(t, w, nil, "--report-dir", t.TempDir(), "--", gunicorn, "--chdir", dir, "app:app",
		"--workers", "1", "--access-logfile", "-", "--bind", fmt.Sprintf("127.0.0.1:%d", port))
	w.Close()
	first, err := bufio.NewReader(r).ReadString('\n') // head -1
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if !strings.Contains(first, `"gwrap.start"`) {
		t.Errorf("first line %q", first)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	waitHTTP(t, url, 15*time.Second)
	for i := 0; i < 20; i++ { // each request relays an access line to the gone reader
		if code, body := get(url, 5*time.Second); code != 200 {
			t.Fatalf("request %d after the reader left: %d %s", i, code, body)
		}
	}
	select {
	case <-waited:
		t.Fatalf("gwrap exited (%d) after its reader left; stderr:\n%s", cmd.ProcessState.ExitCode(), stderr.String())
	default:
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, took := waitExit(t, cmd, waited, 20*time.Second)
	t.Logf("TERM to exit %v; stderr:\n%s", took, stderr.String())
	if code != 0 {
		t.Errorf("exit code %d, want Gunicorn's 0", code)
	}
	lines := stderrLines(stderr)
	if len(lines) != 2 || !strings.Contains(lines[0], "EPIPE") || !strings.Contains(lines[1], "lines of output lost") {
		t.Errorf("stderr should say the EPIPE once and the count at the end:\n%s", stderr.String())
	}
}

// TestStdoutFull: stdout on a full disk (/dev/full) costs one line on stderr and a count, not a
// line per relayed line.
func TestStdoutFull(t *testing.T) {
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		testkit.Unavailable(t, "no /dev/full: %v", err)
	}
	defer full.Close()
	cmd, stderr, waited := gwrapWithStdout(t, full, nil, "--report-dir", t.TempDir(), "--", "/bin/sh", "-c",
		`i=0; while [ $i -lt 10000 ]; do echo "line $i"; i=$((i+1)); done`)
	code, _ := waitExit(t, cmd, waited, 60*time.Second)
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	lines := stderrLines(stderr)
	t.Logf("stderr:\n%s", stderr.String())
	if len(lines) != 2 || !strings.Contains(lines[0], "ENOSPC") {
		t.Fatalf("%d stderr lines, want the ENOSPC once and the count", len(lines))
	}
	var lost, dropped, failed int
	if _, err := fmt.Sscanf(lines[1], "gwrap: lines of output lost: %d (%d dropped because stdout fell behind, %d failed to write)", &lost, &dropped, &failed); err != nil {
		t.Fatal(err)
	}
	if lost < 10000 {
		t.Errorf("%d lines counted as lost, want the 10000 relayed lines and gwrap's own", lost)
	}
}

// TestStalledReaderStopBudget: stdout's reader stalls (the pipe is full); a TERM with a 2 s budget
// still gets the group SIGKILLed within budget + 1 s (before: 25 s late, the loop blocked on its
// signal line).
func TestStalledReaderStopBudget(t *testing.T) {
	dir := t.TempDir()
	pidFile, doneFile := filepath.Join(dir, "pid"), filepath.Join(dir, "done")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close() // never read until gwrap is gone
	pad := strings.Repeat("x", 200)
	script := fmt.Sprintf(`echo $$ > %s; trap "" TERM; i=0; while [ $i -lt 3000 ]; do echo "line $i %s"; i=$((i+1)); done; touch %s; exec sleep 60`,
		pidFile, pad, doneFile)
	cmd, stderr, waited := gwrapWithStdout(t, w, nil, "--report-dir", t.TempDir(), "--stop-budget", "2s", "--", "/bin/sh", "-c", script)
	w.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(doneFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child could not write its 3000 lines (900 KB) past a stalled stdout: the relay blocks; stderr:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(pidFile)
	child, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	term := time.Now()
	for processAlive(child) {
		if time.Since(term) > 10*time.Second {
			t.Fatalf("the child still runs 10 s after TERM with a 2 s budget")
		}
		time.Sleep(10 * time.Millisecond)
	}
	killed := time.Since(term)
	code, _ := waitExit(t, cmd, waited, 10*time.Second)
	exited := time.Since(term)
	t.Logf("stalled reader, 2 s budget: group killed %v after TERM, gwrap exited %v after TERM (code %d); stderr:\n%s",
		killed, exited, code, stderr.String())
	if killed > 3*time.Second {
		t.Errorf("group killed %v after TERM, want within budget + 1 s", killed)
	}
	if code != 128+int(syscall.SIGKILL) {
		t.Errorf("exit code %d, want 137", code)
	}
	if !strings.Contains(stderr.String(), "lines of output lost") {
		t.Errorf("the lost lines are not said on stderr:\n%s", stderr.String())
	}
}

// processAlive: the process exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// TestSetsidHolderDoesNotHoldGwrap is `gwrap -- sh -c 'setsid sleep 20 & exit 0'`: a process out
// of the child's group holds the log pipe, gwrap exits with the child's code within the drain
// bound (before: 20 s, with nothing serving).
func TestSetsidHolderDoesNotHoldGwrap(t *testing.T) {
	start := time.Now()
	p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--", "/bin/sh", "-c", `setsid sleep 20 & echo "holder $!"; exit 0`)
	code := p.wait(t, 15*time.Second)
	took := time.Since(start)
	for _, ev := range p.stdout.events(t) {
		if l, _ := ev["line"].(string); strings.HasPrefix(l, "holder ") {
			if pid, err := strconv.Atoi(strings.TrimPrefix(l, "holder ")); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	t.Logf("gwrap exited %v after start (drain 2 s + %v grace)", took, 200*time.Millisecond)
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if took > 5*time.Second {
		t.Errorf("gwrap took %v", took)
	}
	exit := p.stdout.waitEvent(t, time.Second, "gwrap.exit", isEvent("gwrap.exit"))
	if exit["drain_cut"] != true {
		t.Errorf("gwrap.exit does not say the drain was cut: %v", exit)
	}
}

// TestTermDuringStartup: a TERM while Gunicorn's config file is evaluated (it sleeps) ends gwrap
// with 143 and a gwrap.exit line, and Gunicorn is never started (before: exit 2, no line).
func TestTermDuringStartup(t *testing.T) {
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, testApp)
	mark := filepath.Join(dir, "evaluated")
	conf := filepath.Join(dir, "slow.conf.py")
	src := fmt.Sprintf("import time\nopen(%q, 'a').write('x\\n')\ntime.sleep(4)\n", mark)
	if err := os.WriteFile(conf, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--", gunicorn, "-c", conf, "--chdir", dir, "app:app",
		"--bind", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	deadline := time.Now().Add(15 * time.Second)
	for {
		if b, _ := os.ReadFile(mark); len(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the config file was never evaluated")
		}
		time.Sleep(20 * time.Millisecond)
	}
	term := time.Now()
	p.signal(t, syscall.SIGTERM)
	code := p.wait(t, 10*time.Second)
	t.Logf("TERM during start-up: exit %d after %v", code, time.Since(term))
	if code != 143 {
		t.Errorf("exit code %d, want 143; stderr:\n%s", code, p.stderr.String())
	}
	exit := p.stdout.waitEvent(t, time.Second, "gwrap.exit", isEvent("gwrap.exit"))
	if exit["exit_code"] != float64(143) || !strings.Contains(exit["reason"].(string), "start-up") {
		t.Errorf("gwrap.exit %v", exit)
	}
	for _, ev := range p.stdout.events(t) {
		if ev["event"] == "gunicorn.log" {
			t.Errorf("Gunicorn was started: %v", ev)
		}
	}
	if b, _ := os.ReadFile(mark); string(b) != "x\n" {
		t.Errorf("the config file was evaluated %d times: Gunicorn started", strings.Count(string(b), "x"))
	}
}

// TestStoppedMasterReported: a SIGSTOPped master is said once, its SIGCONT once.
func TestStoppedMasterReported(t *testing.T) {
	p := startGwrap(t, nil, "--report-dir", t.TempDir(), "--", "/bin/sh", "-c", `echo "child $$"; exec sleep 60`)
	ev := p.stdout.waitEvent(t, 10*time.Second, "the child's pid", func(m map[string]any) bool {
		l, _ := m["line"].(string)
		return strings.HasPrefix(l, "child ")
	})
	child, _ := strconv.Atoi(strings.TrimPrefix(ev["line"].(string), "child "))
	if err := syscall.Kill(child, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := p.stdout.waitEvent(t, 10*time.Second, "gunicorn.stopped", isEvent("gunicorn.stopped"))
	if stopped["signal"] != "SIGSTOP" || stopped["pid"] != float64(child) || stopped["level"] != "warn" {
		t.Errorf("gunicorn.stopped %v", stopped)
	}
	if err := syscall.Kill(child, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	p.stdout.waitEvent(t, 10*time.Second, "gunicorn.continued", isEvent("gunicorn.continued"))
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t, 15*time.Second); code != 143 {
		t.Errorf("exit code %d, want 143 (sleep killed by TERM)", code)
	}
	n := 0
	for _, ev := range p.stdout.events(t) {
		if ev["event"] == "gunicorn.stopped" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d gunicorn.stopped events for one stop", n)
	}
}

// TestBadValuesExit2: every duration, count and threshold has a bound; beyond it, NaN or
// infinite, gwrap says which and exits 2 without starting anything.
func TestBadValuesExit2(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{nil, "GWRAP_HISTORY=1000000h", "--history"},
		{[]string{"--history", "2h"}, "", "--history"},
		{[]string{"--interval", "10ms", "--fast-interval", "10ms", "--history", "1h"}, "", "samples per worker"},
		{[]string{"--stop-budget", "1000h"}, "", "--stop-budget"},
		{[]string{"--interval", "2h"}, "", "--interval"},
		{[]string{"--follow-up", "24h"}, "", "--follow-up"},
		{[]string{"--report-max-count", "1000000000"}, "", "--report-max-count"},
		{[]string{"--report-max-bytes", "99999999999999"}, "", "--report-max-bytes"},
		{[]string{"--near-limit", "NaN"}, "", "--near-limit"},
		{nil, "GWRAP_CPU_BOUND=NaN", "--cpu-bound"},
		{[]string{"--run-delay", "Inf"}, "", "--run-delay"},
		{[]string{"--memory-psi", "-Inf"}, "", "--memory-psi"},
		{[]string{"--long-share", "NaN"}, "", "--long-share"},
	} {
		name := strings.Join(append(tc.args, tc.env), " ")
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(gwrapBin, append(tc.args, "--", "true")...)
			cmd.Env = append(os.Environ(), tc.env)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			_ = cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) || stdout.Len() != 0 {
				t.Errorf("stderr does not name %s, or something started:\n%s\n%s", tc.want, stderr.String(), stdout.String())
			}
		})
	}
}

// TestUnknownEnvWarned: a misspelled GWRAP_ variable is warned about once, naming the setting
// meant.
func TestUnknownEnvWarned(t *testing.T) {
	p := startGwrap(t, []string{"GWRAP_HISTROY=10m", "GWRAP_STOPBUDGET=3s"}, "--report-dir", t.TempDir(), "--", "true")
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	want := map[string]string{"GWRAP_HISTROY": "GWRAP_HISTORY", "GWRAP_STOPBUDGET": "GWRAP_STOP_BUDGET"}
	n := 0
	for _, ev := range p.stdout.events(t) {
		if ev["code"] != "env_unknown" {
			continue
		}
		n++
		msg := ev["message"].(string)
		name, _, _ := strings.Cut(msg, " ")
		if meant := want[name]; meant == "" || !strings.Contains(msg, "did you mean "+meant+"?") {
			t.Errorf("warning %q", msg)
		}
	}
	if n != 2 {
		t.Errorf("%d env_unknown warnings, want 2", n)
	}
}

// TestReportDirRefusedAtStart: a report dir that is a symlink is refused at start-up with a
// warning, and nothing is written through it.
func TestReportDirRefusedAtStart(t *testing.T) {
	target := t.TempDir()
	link := filepath.Join(t.TempDir(), "reports")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	p := startGwrap(t, nil, "--report-dir", link, "--", "true")
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	ev := p.stdout.waitEvent(t, time.Second, "the report_dir warning", func(m map[string]any) bool { return m["code"] == "report_dir" })
	if msg := ev["message"].(string); !strings.Contains(msg, "symlink") || !strings.Contains(msg, link) {
		t.Errorf("warning %q", msg)
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Errorf("written through the symlink: %v", ents)
	}
}

// TestExplainEndlessLine: explain on a line with no end (/dev/zero) keeps reading in bounded
// memory; stopped after a while, it has not grown (the peak RSS is measured by scripts, this
// checks it is still running and small).
func TestExplainEndlessLine(t *testing.T) {
	cmd := exec.Command(gwrapBin, "explain", "/dev/zero")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	// Wait until it has read 200 MB of the line (its read offset), then look at its memory.
	deadline := time.Now().Add(60 * time.Second)
	for readBytes(cmd.Process.Pid) < 200<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("explain read %d bytes of /dev/zero in 60 s", readBytes(cmd.Process.Pid))
		}
		time.Sleep(20 * time.Millisecond)
	}
	hwm := vmHWM(t, cmd.Process.Pid)
	t.Logf("explain after %d MiB of one line: peak RSS %d MiB", readBytes(cmd.Process.Pid)>>20, hwm>>20)
	if hwm > 100<<20 { // the race detector's own overhead included; before: > 400 MiB here
		t.Errorf("peak RSS %d MiB after 200 MiB of one line: the line is held", hwm>>20)
	}
}

// readBytes is what the process has read so far (/proc/PID/io rchar), 0 when unknown.
func readBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "rchar: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// vmHWM is the process's peak RSS from /proc/PID/status.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestReportListIgnoresWhatIsNotAReport: `gwrap report list` in a dir with a FIFO named x.json, a
// link to /dev/zero named like a report and someone's JSON neither hangs, nor reads the device,
// nor lists them.
func TestReportListIgnoresWhatIsNotAReport(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "x.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "20261125T034236.000Z-8.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "20261125T034236.000Z-9.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00-dataset.json"), []byte(`{"rows": []}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gwrapBin, "report", "list", "--json", "--report-dir", dir)
	var stdout, stderr testkit.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("report list: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("report list hangs")
	}
	if got := strings.TrimSpace(stdout.String()); got != "[]" {
		t.Errorf("listed %s", got)
	}
}

// TestFastStdoutLosesNothingOnOneCPU: a burst of 500,000 lines to a stdout that keeps up (here
// /dev/null) loses none, with gwrap on one P (its default, and Go's in a container limited to one
// CPU). Before, the relay and the event loop handed lines to each other and starved the writer
// goroutine of the CPU: a third of the lines were dropped as if stdout had stalled.
func TestFastStdoutLosesNothingOnOneCPU(t *testing.T) {
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	lines := filepath.Join(t.TempDir(), "lines.txt")
	var b strings.Builder
	for i := 0; i < 500_000; i++ {
		fmt.Fprintf(&b, "[2026-11-25 03:42:30 +0000] [%d] [INFO] GET /items/%d 200\n", 3600+i%8, i)
	}
	if err := os.WriteFile(lines, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// A build without -race, as shipped: the race detector slows the producers enough to hide it.
	bin, err := shippedBin()
	if err != nil {
		t.Fatal(err)
	}
	cmd, stderr, waited := startWithStdout(t, bin, devnull, nil, "--report-dir", t.TempDir(), "--", "cat", lines)
	if code, took := waitExit(t, cmd, waited, 120*time.Second); code != 0 {
		t.Fatalf("exit code %d after %v", code, took)
	}
	if s := stderr.String(); s != "" {
		t.Errorf("stderr:\n%s", s)
	}
}
