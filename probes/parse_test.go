package probes

import (
	"os"
	"runtime"
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
	w, err := openWorker(fs, kids[0].PID)
	if err != nil {
		t.Fatal(err)
	}
	if w.id != kids[0] {
		t.Errorf("openWorker read %v, Children %v", w.id, kids[0])
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
	// An idle sync worker beats every 15 s (gunicorn.Class.Heartbeat): late only past 15 s + 2 s.
	w := NewWatcher(NewFS("testdata/proc"), Options{Limits: Limits{Timeout: 30 * time.Second, Beat: 15 * time.Second, DirtyTimeout: 300 * time.Second}})
	http, dirty := &tracked{}, &tracked{role: RoleDirty}
	if got := w.lateAfter(http, 0.5); got != 17*time.Second {
		t.Errorf("sync 0.5: %v", got)
	}
	if got := w.lateAfter(http, 0.8); got != 24*time.Second {
		t.Errorf("sync 0.8: %v", got)
	}
	g := NewWatcher(NewFS("testdata/proc"), Options{Limits: Limits{Timeout: 30 * time.Second, Beat: time.Second, DirtyTimeout: 300 * time.Second}})
	if got := g.lateAfter(http, 0.5); got != 15*time.Second {
		t.Errorf("gthread 0.5: %v", got)
	}
	// A beat not given is the longest any class has, timeout/2: an idle worker is never late.
	if got := NewWatcher(NewFS("testdata/proc"), Options{Limits: Limits{Timeout: 30 * time.Second}}).lateAfter(http, 0.5); got != 17*time.Second {
		t.Errorf("no beat 0.5: %v", got)
	}
	// A dirty worker is judged against --dirty-timeout, whatever the HTTP workers' class: its
	// loop beats every --dirty-timeout/2 (150 s), so it is late past 150 s + 2 s, then 240 s.
	for _, c := range []*Watcher{w, g} {
		if a, b := c.lateAfter(dirty, 0.5), c.lateAfter(dirty, 0.8); a != 152*time.Second || b != 240*time.Second {
			t.Errorf("dirty: %v %v", a, b)
		}
	}
}

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     status
	}{
		{"worker", "Name:\tgunicorn\nThreads:\t3\nVmSwap:\t      8 kB\nRssAnon:\t    3200 kB\nRssFile:\t   10000 kB\nRssShmem:\t       4 kB\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n",
			status{rssAnon: 3200 << 10, rssFile: 10000 << 10, rssShmem: 4 << 10, swap: 8 << 10, threads: 3, volCtxt: 120, involCtxt: 7}},
		{"kernel thread has no Rss lines", "Name:\tkthreadd\nThreads:\t1\n", status{threads: 1}},
		{"no trailing newline", "RssAnon:\t1 kB", status{rssAnon: 1024}},
		{"empty", "", status{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseStatus([]byte(tc.in)); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseSchedstat(t *testing.T) {
	for in, want := range map[string]uint64{"3740231 23388 2\n": 23388, "1 0 0": 0} {
		if got, err := parseSchedstat([]byte(in)); err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	if _, err := parseSchedstat([]byte("12\n")); err == nil {
		t.Error("truncated schedstat accepted")
	}
}

func TestParseSmapsRollup(t *testing.T) {
	in := "55d0-7ffd ---p 00000000 00:00 0    [rollup]\nRss:  16000 kB\nPss:  13021 kB\nPrivate_Clean:  100 kB\nPrivate_Dirty:  3336 kB\nPrivate_Hugetlb:  9 kB\n"
	if got := parseSmapsRollup([]byte(in)); got != (rollup{pss: 13021 << 10, uss: 3436 << 10, known: true}) {
		t.Errorf("got %+v", got)
	}
}

func TestParseNetUnix(t *testing.T) {
	const in = "Num       RefCount Protocol Flags    Type St Inode Path\n" +
		"000000009db1805b: 00000003 00000000 00000000 0001 03  1056\n" +
		"0000000074737cc6: 00000002 00000000 00010000 0001 01  1057 /run/app.sock\n"
	got := parseNetUnix([]byte(in), map[uint64]bool{1056: true, 1057: true})
	if len(got) != 2 || got[0] != (Socket{Proto: "unix", Type: "stream", State: "CONNECTED", Inode: 1056}) ||
		got[1] != (Socket{Proto: "unix", Type: "stream", Local: "/run/app.sock", State: "LISTEN", Inode: 1057}) {
		t.Errorf("got %+v", got)
	}
}

func TestParseSyscall(t *testing.T) {
	cases := map[string]string{"running\n": "running", "-1 0x7ffd 0x0\n": "-1", "": "", "999 0x1\n": "syscall 999"}
	if runtime.GOARCH == "amd64" {
		cases["230 0x1 0x1 0x7fffe0febf70 0x0\n"] = "clock_nanosleep"
	}
	for in, want := range cases {
		if got := parseSyscall([]byte(in)); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
