package probes

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fixturePIDs are the master and worker captured into testdata/proc from a real Gunicorn 20.1
// sync worker sleeping in a request (see testdata/proc/PIDS).
func fixturePIDs(t *testing.T) (int, int) {
	t.Helper()
	b, err := os.ReadFile("testdata/proc/PIDS")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	m, _ := strconv.Atoi(f[0])
	w, _ := strconv.Atoi(f[1])
	return m, w
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     stat
		err      bool
	}{
		{"plain", "42 (python3) S 41 42 42 0 -1 4194560 100 0 3 0 250 50 0 0 20 0 2 0 12345 1000 100 0 0",
			stat{state: "S", ppid: 41, majflt: 3, utime: 250, stime: 50, threads: 2, starttime: 12345}, false},
		{"title with spaces and parens", "7 (gunicorn: worker [app:app] (x)) R 1 7 7 0 -1 0 0 0 9 0 1 2 0 0 20 0 1 0 99 0 0",
			stat{state: "R", ppid: 1, majflt: 9, utime: 1, stime: 2, threads: 1, starttime: 99}, false},
		{"truncated", "7 (x) R 1 7", stat{}, true},
		{"garbage", "no paren", stat{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat([]byte(tc.in))
			if (err != nil) != tc.err || got != tc.want {
				t.Errorf("got %+v %v, want %+v err=%v", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestFixtureTree(t *testing.T) {
	master, worker := fixturePIDs(t)
	fs := NewFS("testdata/proc")
	kids, err := fs.Children(master)
	if err != nil || len(kids) != 1 || kids[0].PID != worker || kids[0].StartTime == 0 {
		t.Fatalf("children %v %v", kids, err)
	}
	w, err := openWorker(fs, kids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	s, err := w.sample(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if s.State != "S" || s.RSSAnon == 0 || s.RSSFile == 0 || s.Threads != 1 || s.VoluntaryCtxt == 0 {
		t.Errorf("sample %+v", s)
	}
	// The heartbeat link of the fixture points nowhere: the age is unknown (negative), not zero.
	if s.HeartbeatAge >= 0 || s.Heartbeats {
		t.Errorf("heartbeat %v %v", s.HeartbeatAge, s.Heartbeats)
	}
	if fd, err := fs.heartbeatFD(worker); err != nil || fd != 6 {
		t.Errorf("heartbeat fd %d %v, want 6", fd, err)
	}
	d, err := fs.Deep(worker, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if d.Wchan != "hrtimer_nanosleep" || d.Syscall != "clock_nanosleep" || d.PSS == 0 || d.USS == 0 || d.OpenFiles != 12 {
		t.Errorf("deep %+v", d)
	}
	var listen bool
	for _, s := range d.Sockets {
		if s.State == "LISTEN" && s.Local == "127.0.0.1:18555" {
			listen = true
		}
	}
	if !listen {
		t.Errorf("the listening socket is not found: %+v", d.Sockets)
	}
	if wo := d.WaitingOn(); len(wo) != 1 || wo[0] != "wchan hrtimer_nanosleep" {
		t.Errorf("waiting on %v", wo)
	}
}

func TestHexAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"0500000A:1538":                         "10.0.0.5:5432",
		"00000000000000000000000001000000:0050": "[::1]:80",
		"0000000000000000FFFF00000100007F:01BB": "127.0.0.1:443",
	} {
		if got, err := hexAddr(in); err != nil || got != want {
			t.Errorf("%s: %q %v, want %s", in, got, err, want)
		}
	}
	if _, err := hexAddr("zz:1"); err == nil {
		t.Error("garbage accepted")
	}
}

func TestHeartbeatConventions(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	mono := 5000 * time.Second
	for _, tc := range []struct {
		name   string
		st     unix.Stat_t
		age    time.Duration
		beaten bool
	}{
		{"≤21 fchmod, beat 3 s ago", unix.Stat_t{Mode: 0o100001, Ctim: unix.Timespec{Sec: 1_800_000_000 - 3}, Mtim: unix.Timespec{Sec: 1_799_000_000}}, 3 * time.Second, true},
		{"≤21 never beat", unix.Stat_t{Mode: 0o100600, Ctim: unix.Timespec{Sec: 1_800_000_000 - 40}, Mtim: unix.Timespec{Sec: 1_800_000_000 - 40}}, 40 * time.Second, false},
		{"≥22 utime monotonic, 7 s ago", unix.Stat_t{Mode: 0o100600, Ctim: unix.Timespec{Sec: 1_800_000_000 - 7}, Mtim: unix.Timespec{Sec: 4993}}, 7 * time.Second, true},
		{"≥22 never beat", unix.Stat_t{Mode: 0o100600, Ctim: unix.Timespec{Sec: 1_800_000_000 - 12}, Mtim: unix.Timespec{Sec: 1_800_000_000 - 12}}, 12 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			age, beaten, _ := heartbeatAge(tc.st, now, mono)
			if age != tc.age || beaten != tc.beaten {
				t.Errorf("age %v beaten %v, want %v %v", age, beaten, tc.age, tc.beaten)
			}
		})
	}
}

func TestLateThresholds(t *testing.T) {
	w := NewWatcher(NewFS("testdata/proc"), Options{Timeout: 30 * time.Second, WorkerClass: "sync"})
	// An idle sync worker beats every 15 s: late only past 15 s + 2 s.
	if got := w.lateAfter(0.5); got != 17*time.Second {
		t.Errorf("sync 0.5: %v", got)
	}
	if got := w.lateAfter(0.8); got != 24*time.Second {
		t.Errorf("sync 0.8: %v", got)
	}
	g := NewWatcher(NewFS("testdata/proc"), Options{Timeout: 30 * time.Second, WorkerClass: "gthread"})
	if got := g.lateAfter(0.5); got != 15*time.Second {
		t.Errorf("gthread 0.5: %v", got)
	}
	if NormalBeat("uvicorn.workers.UvicornWorker", 60*time.Second) != 30*time.Second || NormalBeat("gevent", 60*time.Second) != time.Second {
		t.Error("normal beats")
	}
}

func TestRing(t *testing.T) {
	r := newRing(3)
	for i := 1; i <= 5; i++ {
		r.add(Sample{Threads: i})
	}
	got := r.list()
	if len(got) != 3 || got[0].Threads != 3 || got[2].Threads != 5 {
		t.Errorf("ring %v", got)
	}
}
