package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// deathsRun is gwrap in front of Debian's Gunicorn (20.1) serving the shared app, optionally in a
// memory cgroup.
type deathsRun struct {
	p    *proc
	base string
	cg   *testkit.Cgroup
}

func startDeaths(t *testing.T, bin string, limit int64, args ...string) *deathsRun {
	t.Helper()
	gunicorn := testkit.Gunicorn(t)
	dir := writeApp(t, testApp)
	port := freePort(t)
	argv := append([]string{bin, "--report-dir", t.TempDir(), "--", gunicorn, "--chdir", dir, "app:app",
		"--bind", fmt.Sprintf("127.0.0.1:%d", port)}, args...)
	r := &deathsRun{base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	if limit > 0 {
		r.cg = testkit.MemoryCgroup(t, limit)
		argv = r.cg.Wrap(t, argv)
	}
	r.p = startCmd(t, exec.Command(argv[0], argv[1:]...), nil)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gwrap's output:\n%s", strings.Join(r.p.stdout.snapshot(), "\n"))
		}
	})
	waitHTTP(t, r.base+"/", 30*time.Second)
	return r
}

// pid asks a worker its pid.
func (r *deathsRun) pid(t *testing.T) int {
	t.Helper()
	code, body := get(r.base+"/pid", 10*time.Second)
	pid, err := strconv.Atoi(strings.TrimSpace(body))
	if code != 200 || err != nil {
		t.Fatalf("/pid: %d %q", code, body)
	}
	return pid
}

// workers waits until the Gunicorn master (gwrap's child) has n children, from /proc, and
// returns them sorted.
func (r *deathsRun) workers(t *testing.T, n int) []int {
	t.Helper()
	kids := func(parent int) []int { // each thread lists the children it forked
		files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", parent))
		var out []int
		for _, f := range files {
			b, _ := os.ReadFile(f)
			for _, f := range strings.Fields(string(b)) {
				n, _ := strconv.Atoi(f)
				out = append(out, n)
			}
		}
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		masters := kids(r.p.cmd.Process.Pid)
		if len(masters) != 1 {
			t.Fatalf("gwrap has children %v, want the master alone", masters)
		}
		ws := kids(masters[0])
		if len(ws) == n {
			sort.Ints(ws)
			return ws
		}
		if time.Now().After(deadline) {
			t.Fatalf("the master has workers %v, want %d", ws, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends gwrap (which decides every incident still open) and returns its postmortem events
// as "pid cause", sorted.
func (r *deathsRun) stop(t *testing.T) ([]string, map[int]map[string]any) {
	t.Helper()
	r.p.signal(t, syscall.SIGTERM)
	r.p.wait(t, 30*time.Second)
	var got []string
	pms := map[int]map[string]any{}
	for _, e := range r.p.stdout.events(t) {
		if e["event"] == "postmortem" {
			got = append(got, fmt.Sprintf("%d %v", pidOf(e), e["cause"]))
			pms[pidOf(e)] = e
		}
	}
	sort.Strings(got)
	return got, pms
}

// booted waits for the relayed boot line of a worker that follows output line from, and returns
// its pid.
func (r *deathsRun) booted(t *testing.T, from int) int {
	t.Helper()
	var pid int
	r.p.stdout.waitFrom(t, from, 30*time.Second, "a new worker's boot line", func(m map[string]any) bool {
		line, _ := m["line"].(string)
		_, after, ok := strings.Cut(line, "Booting worker with pid: ")
		n, err := strconv.Atoi(strings.TrimSpace(after))
		pid = n
		return m["event"] == "gunicorn.log" && ok && err == nil
	})
	return pid
}

// mark is the number of output lines so far: waitFrom(mark) looks only at what comes after.
func (r *deathsRun) mark() int { return len(r.p.stdout.snapshot()) }

// waitFrom is waitEvent over the lines from index from on.
func (l *lineLog) waitFrom(t testing.TB, from int, d time.Duration, what string, pred func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(d)
	timer := time.AfterFunc(d, func() { l.mu.Lock(); l.cond.Broadcast(); l.mu.Unlock() })
	defer timer.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for seen := from; ; l.cond.Wait() {
		for ; seen < len(l.lines); seen++ {
			var m map[string]any
			if json.Unmarshal([]byte(l.lines[seen]), &m) == nil && pred(m) {
				return m
			}
		}
		if l.done || time.Now().After(deadline) {
			t.Fatalf("no %s within %v; output:\n%s", what, d, strings.Join(l.lines, "\n"))
		}
	}
}

func want(t *testing.T, got []string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("post-mortems %q, want %q", got, want)
	}
}

// TestOverlappingDeaths: deaths close together each get their own verdict, with real OOM kills
// in a memory cgroup and Debian's Gunicorn 20.1 under the whole gwrap binary. The OOM kill goes
// to the worker the kernel killed, never to the worker that died just before it.
func TestOverlappingDeaths(t *testing.T) {
	t.Run("a timeout, then within 2 s an OOM kill of the replacement", func(t *testing.T) {
		r := startDeaths(t, gwrapBin, 200<<20, "--workers", "1", "--timeout", "4", "--graceful-timeout", "2", "--preload")
		a := r.pid(t)
		from := r.mark()
		_, seq := kmsg(t, 0)
		go get(r.base+"/sleep?60", 30*time.Second)
		timeout := r.p.stdout.waitEvent(t, 30*time.Second, "worker.timeout", isEvent("worker.timeout"))
		r.booted(t, from)
		go get(r.base+"/alloc?1000", 30*time.Second)
		oom := r.p.stdout.waitEvent(t, 30*time.Second, "oom.kill", isEvent("oom.kill"))
		gap := eventTime(t, oom).Sub(eventTime(t, timeout))
		t.Logf("the OOM kill came %v after the timeout", gap.Round(time.Millisecond))
		if gap > 2*time.Second {
			t.Errorf("the OOM kill came %v after the timeout, not within 2 s: the case was not made", gap)
		}
		b := oomKilledSince(t, seq, 1)[0]
		r.p.stdout.waitEvent(t, 30*time.Second, "the replacement's post-mortem", func(m map[string]any) bool {
			return m["event"] == "postmortem" && pidOf(m) == b
		})
		got, pms := r.stop(t)
		want(t, got, fmt.Sprintf("%d blocked", a), fmt.Sprintf("%d oom_killed", b))
		if pm := pms[a]; pm != nil {
			if d := field(readReport(t, pm), "incident", "oom_kill_delta"); d != float64(0) {
				t.Errorf("the timed-out worker's report carries oom_kill_delta %v", d)
			}
		}
	})
	t.Run("a max-requests recycle, then an OOM kill of the replacement", func(t *testing.T) {
		r := startDeaths(t, gwrapBin, 200<<20, "--workers", "1", "--max-requests", "1", "--preload")
		_, seq := kmsg(t, 0)
		a := r.pid(t) // the worker's one request: it recycles
		go get(r.base+"/alloc?1000", 30*time.Second)
		b := oomKilledSince(t, seq, 1)[0]
		if a == b {
			t.Fatalf("worker %d served both requests: it did not recycle", a)
		}
		r.p.stdout.waitEvent(t, 30*time.Second, "the replacement's post-mortem", func(m map[string]any) bool {
			return m["event"] == "postmortem" && pidOf(m) == b
		})
		got, _ := r.stop(t)
		want(t, got, fmt.Sprintf("%d oom_killed", b))
	})
	t.Run("two workers OOM-killed within a second", func(t *testing.T) {
		r := startDeaths(t, gwrapBin, 300<<20, "--workers", "2", "--preload")
		ws := r.workers(t, 2)
		_, seq := kmsg(t, 0)
		go get(r.base+"/alloc?1000", 30*time.Second)
		go get(r.base+"/alloc?1000", 30*time.Second)
		killed := oomKilledSince(t, seq, 2)
		sort.Ints(killed)
		if fmt.Sprint(killed) != fmt.Sprint(ws) {
			t.Fatalf("the kernel killed %v, not the two workers %v: the case was not made", killed, ws)
		}
		for _, pid := range ws {
			r.p.stdout.waitEvent(t, 30*time.Second, fmt.Sprintf("worker %d's post-mortem", pid), func(m map[string]any) bool {
				return m["event"] == "postmortem" && pidOf(m) == pid
			})
		}
		got, _ := r.stop(t)
		want(t, got, fmt.Sprintf("%d oom_killed", ws[0]), fmt.Sprintf("%d oom_killed", ws[1]))
		var kills []time.Time
		for _, e := range r.p.stdout.events(t) {
			if e["event"] == "oom.kill" {
				kills = append(kills, eventTime(t, e))
			}
		}
		if len(kills) > 0 {
			d := kills[len(kills)-1].Sub(kills[0])
			t.Logf("%d oom.kill events, %v apart", len(kills), d.Round(time.Millisecond))
			if d > time.Second {
				t.Errorf("the two OOM kills were %v apart, not within a second: the case was not made", d)
			}
		}
	})
	t.Run("an outside SIGKILL of one worker while another is OOM-killed", func(t *testing.T) {
		const limit = 300 << 20
		r := startDeaths(t, gwrapBin, limit, "--workers", "2", "--preload")
		ws := r.workers(t, 2)
		_, seq := kmsg(t, 0)
		go get(r.base+"/grow?160", 60*time.Second)
		// Kill the worker that does not grow once the cgroup is 64 MiB from its limit: the
		// other needs about half a second more to be OOM-killed.
		usage := filepath.Join(r.cg.Dir, "memory.usage_in_bytes")
		deadline := time.Now().Add(30 * time.Second)
		for {
			b, _ := os.ReadFile(usage)
			if n, _ := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64); n >= limit-64<<20 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the cgroup did not fill")
			}
			time.Sleep(5 * time.Millisecond)
		}
		grower, other := ws[0], ws[1]
		if rssOf(ws[1]) > rssOf(ws[0]) {
			grower, other = ws[1], ws[0]
		}
		killed := time.Now()
		if err := syscall.Kill(other, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if v := oomKilledSince(t, seq, 1); fmt.Sprint(v) != fmt.Sprint([]int{grower}) {
			t.Fatalf("the kernel killed %v, not the growing worker %d: the case was not made", v, grower)
		}
		oom := r.p.stdout.waitEvent(t, 30*time.Second, "oom.kill", isEvent("oom.kill"))
		t.Logf("the OOM kill came %v after the outside SIGKILL", eventTime(t, oom).Sub(killed).Round(time.Millisecond))
		for _, pid := range ws {
			r.p.stdout.waitEvent(t, 30*time.Second, fmt.Sprintf("worker %d's post-mortem", pid), func(m map[string]any) bool {
				return m["event"] == "postmortem" && pidOf(m) == pid
			})
		}
		got, _ := r.stop(t)
		want(t, got, fmt.Sprintf("%d crashed", other), fmt.Sprintf("%d oom_killed", grower))
	})
}

// kmsg reads the kernel's log records after seq (/dev/kmsg, root only), without waiting, and
// returns the pids the OOM killer killed ("Killed process N") and the last record's seq: the
// kernel's own word on which process it killed, the truth the tests compare gwrap's to.
func kmsg(t *testing.T, seq int64) (killed []int, last int64) {
	t.Helper()
	// Plain syscalls: os.File would park a non-blocking device in the netpoller and wait.
	fd, err := syscall.Open("/dev/kmsg", syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		testkit.Unavailable(t, "cannot read the kernel log: %v", err)
	}
	defer syscall.Close(fd)
	last = seq
	buf := make([]byte, 8192)
	for {
		n, err := syscall.Read(fd, buf)
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.EINTR) {
			continue // records were overwritten under us
		}
		if err != nil || n <= 0 {
			return killed, last
		}
		// "prio,seq,usec,flags;message"
		head, msg, _ := strings.Cut(string(buf[:n]), ";")
		fields := strings.Split(head, ",")
		if len(fields) < 2 {
			continue
		}
		sq, _ := strconv.ParseInt(fields[1], 10, 64)
		if sq <= seq {
			continue
		}
		last = sq
		if _, rest, ok := strings.Cut(msg, "Killed process "); ok {
			if pid, err := strconv.Atoi(strings.Fields(rest)[0]); err == nil {
				killed = append(killed, pid)
			}
		}
	}
}

// oomKilledSince waits until the kernel's log names n OOM victims after seq, and returns them.
func oomKilledSince(t *testing.T, seq int64, n int) []int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		killed, _ := kmsg(t, seq)
		if len(killed) >= n {
			return killed
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kernel log names %d OOM victims since the start, want %d", len(killed), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rssOf is a process's resident memory (VmRSS), 0 when unreadable.
func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestLinesThatLie: the app prints, with the master's pid, a WORKER TIMEOUT and the master's
// kill lines about its own worker, after a silence long enough to make its heartbeat look stale,
// then answers. gwrap writes no report for the live worker, and when the worker really times out
// afterwards, that death is reported, once, as the timeout it is.
func TestLinesThatLie(t *testing.T) {
	r := startDeaths(t, gwrapBin, 0, "--workers", "1", "--timeout", "6", "--graceful-timeout", "2")
	a := r.pid(t)
	if code, body := get(r.base+"/lie?5", 30*time.Second); code != 200 {
		t.Fatalf("/lie: %d %s", code, body)
	}
	if b := r.pid(t); b != a {
		t.Fatalf("worker %d answered, not %d: the worker that printed the lines died", b, a)
	}
	sleep := time.Now()
	go get(r.base+"/sleep?60", 30*time.Second)
	pm := r.p.stdout.waitEvent(t, 40*time.Second, "a postmortem event", isEvent("postmortem"))
	got, _ := r.stop(t)
	want(t, got, fmt.Sprintf("%d blocked", a))
	at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(field(readReport(t, pm), "incident", "at")))
	if at.Before(sleep) {
		t.Errorf("the report is of the printed lines (incident at %v), not of the timeout after %v", at, sleep)
	}
	warned := false
	for _, e := range r.p.stdout.events(t) {
		if e["event"] == "worker.killed" || e["event"] == "worker.exit" {
			t.Errorf("%v from printed lines: %v", e["event"], e["message"])
		}
		warned = warned || e["code"] == "unverified_line"
	}
	if !warned {
		t.Error("no config.warning unverified_line about the printed lines")
	}
}

// shippedBin is gwrap built as shipped (no -race), once, beside gwrapBin: memory and speed are
// judged on it.
var shippedBin = sync.OnceValues(func() (string, error) {
	bin := filepath.Join(filepath.Dir(gwrapBin), "gwrap-shipped")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// TestFloodOfLinesBoundedMemory: 100,000 boot lines of workers that do not exist and lines of
// megabytes, all printed by the app, leave gwrap's peak RSS under 64 MiB.
func TestFloodOfLinesBoundedMemory(t *testing.T) {
	bin, err := shippedBin()
	if err != nil {
		t.Fatal(err)
	}
	r := startDeaths(t, bin, 0, "--workers", "1")
	gw := r.p.cmd.Process.Pid
	before := vmHWM(t, gw)
	from := r.mark()
	if code, _ := get(r.base+"/flood?100000", 60*time.Second); code != 200 {
		t.Fatalf("/flood answered %d", code)
	}
	r.p.stdout.waitFrom(t, from, 60*time.Second, "the last printed boot line", func(m map[string]any) bool {
		return m["event"] == "gunicorn.log" && strings.HasSuffix(fmt.Sprint(m["line"]), "pid: 1099999")
	})
	flood := vmHWM(t, gw)
	from = r.mark()
	if code, _ := get(r.base+"/biglines?8", 60*time.Second); code != 200 {
		t.Fatalf("/biglines answered %d", code)
	}
	r.p.stdout.waitFrom(t, from, 60*time.Second, "the last long line", func(m map[string]any) bool {
		return m["event"] == "gunicorn.log" && fmt.Sprint(m["line"]) == "biglines done"
	})
	big := vmHWM(t, gw)
	t.Logf("gwrap's peak RSS (VmHWM): %.1f MiB at start, %.1f MiB after 100,000 printed boot lines, %.1f MiB after 8 lines of 4 MiB and 8 of 1 MiB of control bytes",
		float64(before)/(1<<20), float64(flood)/(1<<20), float64(big)/(1<<20))
	if big > 64<<20 {
		t.Errorf("gwrap's peak RSS %.1f MiB, want under 64 MiB", float64(big)/(1<<20))
	}
	r.p.signal(t, syscall.SIGTERM)
	r.p.wait(t, 30*time.Second)
	counts := map[string]int{}
	for _, l := range r.p.stdout.snapshot() {
		for _, name := range []string{"worker.boot", "postmortem"} {
			if strings.Contains(l, `"event":"`+name+`"`) {
				counts[name]++
			}
		}
		if strings.Contains(l, `"event":"gwrap.exit"`) {
			var exit map[string]any
			if json.Unmarshal([]byte(l), &exit) == nil {
				t.Logf("lines stdout did not take in time (gwrap.exit lines_lost): %v", exit["lines_lost"])
			}
		}
	}
	if counts["worker.boot"] != 1 || counts["postmortem"] != 0 {
		t.Errorf("%d worker.boot and %d postmortem events, want the one real worker's boot and no post-mortem", counts["worker.boot"], counts["postmortem"])
	}
}

// TestMasterOOMKilledIsSaid: when the kernel OOM-kills the command itself (a gthread worker's
// memory not freed in time makes the master the next victim; here a master that allocates), the
// worker's death never comes, and gwrap reaps the master before the OOM notification arrives:
// gunicorn.exit and gwrap.exit must still say it was the OOM killer, not a bare "killed by SIGKILL".
func TestMasterOOMKilledIsSaid(t *testing.T) {
	cg := testkit.MemoryCgroup(t, 64<<20)
	script := "import time\nb = bytearray(256 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(30)\n"
	argv := cg.Wrap(t, []string{gwrapBin, "--report-dir", t.TempDir(), "--", "python3", "-c", script})
	p := startCmd(t, exec.Command(argv[0], argv[1:]...), nil)
	if code := p.wait(t, 30*time.Second); code != 137 {
		t.Fatalf("gwrap exited %d, want 137", code)
	}
	var exit, gexit map[string]any
	for _, e := range p.stdout.events(t) {
		switch e["event"] {
		case "gunicorn.exit":
			exit = e
		case "gwrap.exit":
			gexit = e
		}
	}
	t.Logf("gunicorn.exit: %v", exit["message"])
	if exit == nil || exit["oom_killed"] != true || exit["oom_kills"] != float64(1) || !strings.Contains(fmt.Sprint(exit["message"]), "master itself was OOM-killed") {
		t.Errorf("gunicorn.exit %v", exit)
	}
	if gexit == nil || !strings.Contains(fmt.Sprint(gexit["reason"]), "OOM killer") {
		t.Errorf("gwrap.exit %v", gexit)
	}
}
