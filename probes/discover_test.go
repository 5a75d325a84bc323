package probes

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeProc is one process of a /proc tree written from the documented formats.
type fakeProc struct {
	pid, ppid int
	cmdline   []string
	fds       []string // fd link targets, fd 3 upwards
	closed    bool     // its fd table cannot be read (another uid)
	listens   uint64   // the inode of a listening TCP socket it holds (also one of fds)
	environ   string   // NUL-separated
}

// heartbeat is the fd link target of the Gunicorn heartbeat file named n.
func heartbeat(n string) string { return "/tmp/wgunicorn-" + n + " (deleted)" }

func socket(inode uint64) string { return fmt.Sprintf("socket:[%d]", inode) }

// writeProc writes a /proc tree of the processes: stat, cmdline, task/<pid>/children, fd/ (links,
// or a plain file standing in for a table gwrap may not read), and net/tcp with the listeners.
func writeProc(t *testing.T, procs []fakeProc) string {
	t.Helper()
	root := t.TempDir()
	kids := map[int][]string{}
	var rows []string
	for _, p := range procs {
		kids[p.ppid] = append(kids[p.ppid], strconv.Itoa(p.pid))
		if p.listens != 0 {
			rows = append(rows, fmt.Sprintf("   %d: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 100 0 0 10 0", len(rows), p.listens))
		}
	}
	tcp := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" + strings.Join(rows, "\n") + "\n"
	for _, p := range procs {
		dir := filepath.Join(root, strconv.Itoa(p.pid))
		for _, d := range []string{"task/" + strconv.Itoa(p.pid), "net"} {
			if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		files := map[string]string{
			"stat":    fmt.Sprintf("%d (%s) S %d %d %d 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 %d 0 0", p.pid, filepath.Base(p.cmdline[0]), p.ppid, p.pid, p.pid, 1000+p.pid),
			"cmdline": strings.Join(p.cmdline, "\x00") + "\x00",
			"task/" + strconv.Itoa(p.pid) + "/children": strings.Join(kids[p.pid], " ") + " ",
			"net/tcp": tcp,
			"environ": p.environ,
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if p.closed {
			if err := os.WriteFile(filepath.Join(dir, "fd"), nil, 0o644); err != nil { // ENOTDIR stands in for EACCES
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Join(dir, "fd"), 0o755); err != nil {
			t.Fatal(err)
		}
		for i, target := range append([]string{"/dev/null", "pipe:[1]", "pipe:[2]"}, p.fds...) {
			if err := os.Symlink(target, filepath.Join(dir, "fd", strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

// Inodes far above any this host's sock_diag dump can hold, so only the fixture's net/tcp has them.
const (
	listenInode = 9_000_000_001
	otherInode  = 9_000_000_002
)

// TestFindMaster: the master is recognised by what it holds and forks, however it was launched,
// and never among a migration shell's children.
func TestFindMaster(t *testing.T) {
	py := []string{"/usr/bin/python3"}
	gunicorn := []string{"/usr/bin/python3", "/usr/bin/gunicorn", "app:app"}
	runCode := []string{"/usr/bin/python3", "-c", "from gunicorn.app.wsgiapp import run; run()", "app:app"}
	server := []string{"/usr/bin/python3", "server.py"} // a custom Application: looks like nothing
	sh := []string{"/bin/sh", "-c", "python3 manage.py migrate; exec gunicorn app:app"}
	migrate := []string{"/usr/bin/python3", "manage.py", "migrate"}
	listener := socket(listenInode)
	for _, c := range []struct {
		name   string
		procs  []fakeProc
		hinted []int
		want   Master // PID 0: none
	}{
		{"gunicorn itself, with a worker", []fakeProc{
			{pid: 10, ppid: 1, cmdline: gunicorn, fds: []string{listener, heartbeat("a")}, listens: listenInode},
			{pid: 11, ppid: 10, cmdline: gunicorn, fds: []string{listener, heartbeat("a")}},
		}, nil, Master{10, ByHeartbeats}},
		{"python3 -c run(), two workers, no hint", []fakeProc{
			{pid: 10, ppid: 1, cmdline: runCode, fds: []string{listener, heartbeat("a"), heartbeat("b")}},
			{pid: 11, ppid: 10, cmdline: runCode, fds: []string{listener, heartbeat("a")}},
			{pid: 12, ppid: 10, cmdline: runCode, fds: []string{listener, heartbeat("b")}},
		}, nil, Master{10, ByHeartbeats}},
		{"a custom application under a shell that does not exec", []fakeProc{
			{pid: 10, ppid: 1, cmdline: []string{"/bin/sh", "-c", "python3 server.py; echo done"}},
			{pid: 11, ppid: 10, cmdline: server, fds: []string{listener, heartbeat("a")}},
			{pid: 12, ppid: 11, cmdline: server, fds: []string{listener, heartbeat("a")}},
		}, nil, Master{11, ByHeartbeats}},
		{"a migration shell: its children are not workers", []fakeProc{
			{pid: 10, ppid: 1, cmdline: sh},
			{pid: 11, ppid: 10, cmdline: migrate, fds: []string{"/srv/db.sqlite3"}},
			{pid: 12, ppid: 11, cmdline: py, fds: []string{"/srv/db.sqlite3"}},
		}, nil, Master{}},
		{"a migration that prints Gunicorn's start lines with its own pid", []fakeProc{
			{pid: 10, ppid: 1, cmdline: sh},
			{pid: 11, ppid: 10, cmdline: migrate, fds: []string{socket(otherInode)}},
			{pid: 12, ppid: 11, cmdline: py},
		}, []int{11}, Master{}},
		{"before its first worker, a start line naming a process gwrap can read is not enough", []fakeProc{
			{pid: 10, ppid: 1, cmdline: server, fds: []string{listener}, listens: listenInode},
		}, []int{10}, Master{}},
		{"a migration that listens and prints Gunicorn's start lines with its pid", []fakeProc{
			{pid: 10, ppid: 1, cmdline: sh},
			{pid: 11, ppid: 10, cmdline: migrate, fds: []string{listener}, listens: listenInode},
			{pid: 12, ppid: 11, cmdline: py},
		}, []int{11}, Master{}},
		{"before its first worker: a listener and a Gunicorn command line", []fakeProc{
			{pid: 10, ppid: 1, cmdline: gunicorn, fds: []string{listener}, listens: listenInode},
		}, nil, Master{10, ByListener}},
		{"a listener alone is not Gunicorn's", []fakeProc{
			{pid: 10, ppid: 1, cmdline: server, fds: []string{listener}, listens: listenInode},
		}, nil, Master{}},
		{"workers of another uid: the master's heartbeat files say enough", []fakeProc{
			{pid: 10, ppid: 1, cmdline: server, fds: []string{listener, heartbeat("a")}},
			{pid: 11, ppid: 10, cmdline: server, closed: true},
		}, nil, Master{10, ByHeartbeats}},
		{"a master gwrap may not read, with a Gunicorn command line", []fakeProc{
			{pid: 10, ppid: 1, cmdline: []string{"/usr/bin/setpriv", "--reuid=65534", "sh"}},
			{pid: 11, ppid: 10, cmdline: gunicorn, closed: true},
			{pid: 12, ppid: 11, cmdline: gunicorn, closed: true},
		}, nil, Master{11, ByHint}},
		{"a process gwrap may not read, with nothing saying Gunicorn", []fakeProc{
			{pid: 10, ppid: 1, cmdline: server, closed: true},
		}, nil, Master{}},
		{"a worker's multiprocessing child shares its heartbeat: the master is still the master", []fakeProc{
			{pid: 10, ppid: 1, cmdline: runCode, fds: []string{heartbeat("a")}},
			{pid: 11, ppid: 10, cmdline: runCode, fds: []string{heartbeat("a")}},
			{pid: 12, ppid: 11, cmdline: runCode, fds: []string{heartbeat("a")}},
		}, nil, Master{10, ByHeartbeats}},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := writeProc(t, c.procs)
			hinted := func(pid int) bool {
				for _, h := range c.hinted {
					if h == pid {
						return true
					}
				}
				return false
			}
			got, ok := NewFS(root).FindMaster(10, hinted)
			if ok != (c.want.PID != 0) || got != c.want {
				t.Fatalf("FindMaster = %+v, %v; want %+v", got, ok, c.want)
			}
		})
	}
}

// TestNewMasterOf: a USR2 upgrade's new master is told from the workers of the master it is a
// child of by the GUNICORN_PID Gunicorn sets when it re-executes itself.
func TestNewMasterOf(t *testing.T) {
	root := t.TempDir()
	for pid, env := range map[int]string{
		11: "PATH=/usr/bin\x00PYTHONPATH=/app\x00",                    // a worker: the master's own environment
		12: "PATH=/usr/bin\x00GUNICORN_PID=10\x00GUNICORN_FD=3,4\x00", // the new master
		13: "PATH=/usr/bin\x00GUNICORN_PID=9\x00",                     // started by another master's upgrade
		14: "XGUNICORN_PID=10\x00",                                    // not the variable
	} {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "environ"), []byte(env), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fs := NewFS(root)
	for pid, want := range map[int]bool{11: false, 12: true, 13: false, 14: false, 15: false} {
		if got := fs.newMasterOf(10, pid); got != want {
			t.Errorf("newMasterOf(10, %d) = %v, want %v", pid, got, want)
		}
	}
}

// TestSweepFindsTheUpgrade: after USR2 the new master is its old master's child; it is watched as
// a master, its workers as its workers, and it is not taken for a worker itself.
func TestSweepFindsTheUpgrade(t *testing.T) {
	gunicorn := []string{"/usr/bin/python3", "/usr/bin/gunicorn", "app:app"}
	root := writeProc(t, []fakeProc{
		{pid: 10, ppid: 1, cmdline: gunicorn, fds: []string{heartbeat("a")}},
		{pid: 11, ppid: 10, cmdline: gunicorn, fds: []string{heartbeat("a")}},                                 // old worker
		{pid: 12, ppid: 10, cmdline: gunicorn, fds: []string{heartbeat("x")}, environ: "GUNICORN_PID=10\x00"}, // new master
		{pid: 13, ppid: 12, cmdline: gunicorn, fds: []string{heartbeat("x")}, environ: "GUNICORN_PID=10\x00"}, // its worker
	})
	w := NewWatcher(NewFS(root), Options{Limits: Limits{Timeout: 30 * time.Second}})
	w.upgrades = map[int]*newMaster{}
	workers := map[int]*tracked{}
	t.Cleanup(func() {
		for _, tr := range workers {
			tr.w.close()
		}
		for _, nm := range w.upgrades {
			for _, tr := range nm.workers {
				tr.w.close()
			}
		}
	})
	var got []string
	emit := func(e Event) {
		switch e.Kind {
		case EventBoot:
			got = append(got, fmt.Sprintf("boot %d of %d", e.ID.PID, e.Master))
		case EventMaster:
			got = append(got, fmt.Sprintf("master %d under %d", e.ID.PID, e.Parent))
		}
	}
	if gone := w.discover(10, workers, time.Now(), emit); gone {
		t.Fatal("the master taken for gone")
	}
	w.discoverUpgrades(time.Now(), emit)
	if want := "[master 12 under 10 boot 11 of 10 boot 13 of 12]"; fmt.Sprint(got) != want {
		t.Errorf("events %v, want %v", got, want)
	}
}
