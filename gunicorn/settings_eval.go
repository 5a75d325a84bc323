package gunicorn

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gwrap/gwrap/internal/asuser"
)

// evalTick is how often a running evaluator's CPU time is read; evalIdle is how long it may go
// without using CPU once past Timeout before it is stopped.
const (
	evalTick = 250 * time.Millisecond
	evalIdle = time.Second
)

// evaluate runs the evaluator under in.Python. It is stopped after in.Timeout unless it is still
// using CPU then: on a slow machine (software emulation, a small CPU quota) importing gunicorn
// alone takes several seconds, and cutting it off would lose the settings the verdicts depend
// on, while an interpreter blocked on something (a config file waiting on the network) uses no
// CPU and is stopped at in.Timeout. Past in.Timeout it runs as long as its CPU time moved in the
// last second, up to in.MaxTimeout. Gunicorn evaluates the same config file at its own start, so
// a config file that is slow to compute delays Gunicorn as much as it delays gwrap. With in.As
// the interpreter runs as that user (its uid, gid and groups), never as gwrap's root.
func evaluate(ctx context.Context, in SettingsInput) (evaluated, error) {
	d := in.Timeout
	if d <= 0 {
		d = 5 * time.Second
	}
	hard := max(in.MaxTimeout, d)
	ctx, cancel := context.WithTimeout(ctx, hard)
	defer cancel()
	script := strings.Replace(evaluator, "TRACKED", `["`+strings.Join(tracked, `", "`)+`"]`, 1)
	cmd := exec.CommandContext(ctx, in.Python, append([]string{"-c", script}, in.Args...)...)
	cmd.Dir = in.Dir
	cmd.WaitDelay = time.Second // a child the config file started must not hold the pipes open
	cmd.Env = append(append([]string{}, in.Env...), "PYTHONDONTWRITEBYTECODE=1")
	if in.As != nil && !in.As.Equal(asuser.Self()) {
		// The master's own user: the config file, the modules beside it and a usercustomize in
		// its home are the app's, and must never run as root.
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: in.As.SysProcAttr()}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		return evaluated{}, err
	}
	// The watchdog: after d, stop the interpreter once it has been idle for evalIdle.
	stopped := make(chan time.Duration, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		start := time.Now()
		tick := time.NewTicker(evalTick)
		defer tick.Stop()
		last, _ := cpuTime(in.ProcRoot, cmd.Process.Pid)
		busy := start
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				if cpu, ok := cpuTime(in.ProcRoot, cmd.Process.Pid); ok && cpu > last {
					last, busy = cpu, now
				}
				if now.Sub(start) >= d && now.Sub(busy) >= evalIdle {
					stopped <- now.Sub(start).Round(10 * time.Millisecond)
					cancel()
					return
				}
			}
		}
	}()
	err := cmd.Wait()
	select {
	case after := <-stopped:
		return evaluated{}, fmt.Errorf("timed out after %v (idle for %v)", after, evalIdle)
	default:
	}
	if ctx.Err() != nil {
		if hard > d {
			return evaluated{}, fmt.Errorf("timed out after %v (still busy)", hard)
		}
		return evaluated{}, fmt.Errorf("timed out after %v", hard)
	}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if js, ok := strings.CutPrefix(line, "GWRAP-SETTINGS "); ok {
			var out evaluated
			if jerr := json.Unmarshal([]byte(js), &out); jerr != nil {
				return evaluated{}, fmt.Errorf("reading its output: %w", jerr)
			}
			return out, nil
		}
	}
	msg := strings.TrimSpace(stderr.String())
	if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
		msg = msg[i+1:]
	}
	return evaluated{}, fmt.Errorf("%v: %s", err, msg)
}

// cpuTime reads a process's CPU time (user + system, its own and its waited children's) from
// <proc>/<pid>/stat; false when it cannot (the process is gone, no /proc).
func cpuTime(proc string, pid int) (time.Duration, bool) {
	if proc == "" {
		proc = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	return parseStatCPU(b)
}

// parseStatCPU sums utime, stime, cutime and cstime (fields 14–17, in clock ticks of 1/100 s on
// Linux) of a /proc/<pid>/stat line; the command name (field 2) may hold spaces and parentheses.
func parseStatCPU(b []byte) (time.Duration, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:])) // from field 3 (state)
	if len(f) < 15 {
		return 0, false
	}
	var ticks uint64
	for _, s := range f[11:15] {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, true
}
