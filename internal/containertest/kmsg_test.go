package containertest

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// kernelKill is what the kernel logged when its OOM killer killed a process of a container.
type kernelKill struct {
	pid int    // as this machine sees it
	rss uint64 // anon-rss + file-rss + shmem-rss at the kill, bytes (the victim's VmRSS then)
}

var (
	oomKillRecord = regexp.MustCompile(`^oom-kill:.*\boom_memcg=([^,]*).*,pid=(\d+),`)
	killedRecord  = regexp.MustCompile(`Killed process (\d+) \(.*\) total-vm:\d+kB, anon-rss:(\d+)kB, file-rss:(\d+)kB, shmem-rss:(\d+)kB`)
)

// parseOOMKills finds, in the kernel log's messages, the OOM kills in a memory cgroup whose path
// contains id (the container's id: podman's cgroup is …/libpod-<id>): the kernel prints an
// "oom-kill:…oom_memcg=…,pid=N" record, then "Killed process N (comm) …, anon-rss:…kB,
// file-rss:…kB, shmem-rss:…kB" (mm/oom_kill.c).
func parseOOMKills(msgs []string, id string) []kernelKill {
	var out []kernelKill
	want := map[int]bool{}
	for _, m := range msgs {
		if r := oomKillRecord.FindStringSubmatch(m); r != nil && strings.Contains(r[1], id) {
			pid, _ := strconv.Atoi(r[2])
			want[pid] = true
			continue
		}
		r := killedRecord.FindStringSubmatch(m)
		if r == nil {
			continue
		}
		pid, _ := strconv.Atoi(r[1])
		if !want[pid] {
			continue
		}
		delete(want, pid)
		var kb uint64
		for _, f := range r[2:] {
			n, _ := strconv.ParseUint(f, 10, 64)
			kb += n
		}
		out = append(out, kernelKill{pid: pid, rss: kb << 10})
	}
	return out
}

// kmsg returns the messages of the kernel log (/dev/kmsg, as root), oldest first.
func kmsg(t *testing.T) []string {
	t.Helper()
	fd, err := syscall.Open("/dev/kmsg", syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("reading the kernel log: %v", err)
	}
	defer syscall.Close(fd)
	var out []string
	buf := make([]byte, 16384)
	for {
		n, err := syscall.Read(fd, buf)
		if errors.Is(err, syscall.EPIPE) { // a record was overwritten before it was read
			continue
		}
		if err != nil || n <= 0 {
			return out // EAGAIN: the end of the log
		}
		// "PRI,SEQ,TS,FLAGS;message\n" then continuation lines (" KEY=VALUE").
		_, msg, _ := strings.Cut(string(buf[:n]), ";")
		msg, _, _ = strings.Cut(msg, "\n")
		out = append(out, msg)
	}
}

func TestParseOOMKills(t *testing.T) {
	const id = "3d0b5c01aeb41b1fb3024d44283590cfda467c1f5ae343a3c9deb8be11232476"
	msgs := []string{ // as this machine's kernel logged a container's OOM kill (other records cut)
		"gunicorn invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=500",
		"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=libpod-" + id + ",mems_allowed=0,oom_memcg=/libpod_parent/libpod-" + id + ",task_memcg=/libpod_parent/libpod-" + id + ",task=gunicorn,pid=2554,uid=0",
		"Memory cgroup out of memory: Killed process 2554 (gunicorn) total-vm:266272kB, anon-rss:249420kB, file-rss:7424kB, shmem-rss:0kB, UID:0 pgtables:560kB oom_score_adj:500",
		// another container's kill
		"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=libpod-ffff,mems_allowed=0,oom_memcg=/libpod_parent/libpod-ffff,task_memcg=/libpod_parent/libpod-ffff,task=gunicorn,pid=3000,uid=0",
		"Memory cgroup out of memory: Killed process 3000 (gunicorn) total-vm:1kB, anon-rss:1kB, file-rss:1kB, shmem-rss:0kB, UID:0 pgtables:560kB oom_score_adj:500",
	}
	got := parseOOMKills(msgs, id)
	want := []kernelKill{{pid: 2554, rss: (249420 + 7424) << 10}}
	if len(got) != 1 || got[0] != want[0] {
		t.Errorf("parseOOMKills = %+v, want %+v", got, want)
	}
	if got := parseOOMKills(msgs, "0123"); len(got) != 0 {
		t.Errorf("a container with no kill: %+v", got)
	}
}
