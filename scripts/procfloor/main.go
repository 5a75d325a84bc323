// Command procfloor is the floor of gwrap's idle cost, for scripts/bench.sh: it runs a command
// (Gunicorn) and, once a second, reads what gwrap's sweep reads (every child's stat, status and
// schedstat, kept open, and the cgroup's memory usage and stat) and does nothing with it: no
// parsing, no engine, no flight record, no output. What gwrap costs above it is gwrap's own.
//
//	procfloor COMMAND [ARGS...]
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	runtime.GOMAXPROCS(1) // as gwrap
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: procfloor COMMAND [ARGS...]")
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "procfloor:", err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { s := <-sigs; cmd.Process.Signal(s) }()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()

	pid := cmd.Process.Pid
	cg := cgroupFiles()
	files := map[int][]int{} // child pid: its open stat, status, schedstat
	buf := make([]byte, 8192)
	tick := time.NewTicker(time.Second)
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		for _, fd := range cg {
			unix.Pread(fd, buf, 0)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			child, _ := strconv.Atoi(f)
			fds, ok := files[child]
			if !ok {
				for _, name := range []string{"stat", "status", "schedstat"} {
					if fd, err := unix.Open(fmt.Sprintf("/proc/%d/%s", child, name), unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
						fds = append(fds, fd)
					}
				}
				files[child] = fds
			}
			for _, fd := range fds {
				unix.Pread(fd, buf, 0)
			}
		}
	}
}

// cgroupFiles opens this process's memory cgroup's usage and stat (v2, else v1).
func cgroupFiles() []int {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil
	}
	defer f.Close()
	var paths []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		switch {
		case len(parts) != 3:
		case parts[0] == "0" && parts[1] == "":
			paths = append(paths, "/sys/fs/cgroup"+parts[2]+"/memory.current", "/sys/fs/cgroup"+parts[2]+"/memory.stat")
		case strings.Contains(parts[1], "memory"):
			d := "/sys/fs/cgroup/memory" + parts[2]
			paths = append([]string{d + "/memory.usage_in_bytes", d + "/memory.stat"}, paths...)
		}
	}
	var fds []int
	for _, p := range paths {
		if fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			fds = append(fds, fd)
			if len(fds) == 2 {
				break
			}
		}
	}
	return fds
}
