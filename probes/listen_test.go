package probes

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"
)

func TestParseSocketLink(t *testing.T) {
	for in, want := range map[string]uint64{"socket:[41224]": 41224, "pipe:[5]": 0, "socket:[]": 0, "socket:[x]": 0, "/tmp/wgunicorn-x": 0} {
		got, ok := parseSocketLink(in)
		if got != want || ok != (want != 0) {
			t.Errorf("%q: %d %v", in, got, ok)
		}
	}
}

func TestSaturationOf(t *testing.T) {
	rows := append(parseNetTCP([]byte(netTCP)), parseNetTCP([]byte(netTCP6))...)
	master := map[uint64]bool{41224: true, 52000: true, 9: true}
	busy := map[uint64]bool{41224: true, 41301: true} // inherited listener + an accepted client
	idle := map[uint64]bool{41224: true, 41302: true} // inherited listener + an outgoing connection
	bounded := append([]tcpRow(nil), rows...)
	bounded[0].max, bounded[0].maxKnown = 2048, true
	tests := []struct {
		name    string
		rows    []tcpRow
		workers []map[uint64]bool
		want    Saturation
	}{
		{"one busy of three, a bound known", bounded, []map[uint64]bool{busy, idle, nil},
			Saturation{Workers: 3, Busy: 1, BusyKnown: true, Listeners: []Listener{
				{Addr: "127.0.0.1:8080", Inode: 41224, Queue: 3, Max: 2048, MaxKnown: true},
				{Addr: "[::]:8081", Inode: 52000, Queue: 0x800}}}},
		{"bounds unknown (/proc), fd tables unreadable", rows, []map[uint64]bool{nil, nil},
			Saturation{Workers: 2, Listeners: []Listener{
				{Addr: "127.0.0.1:8080", Inode: 41224, Queue: 3},
				{Addr: "[::]:8081", Inode: 52000, Queue: 0x800}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := saturationOf(master, tt.rows, tt.workers); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
	t.Run("a listener of another process is not Gunicorn's", func(t *testing.T) {
		got := saturationOf(map[uint64]bool{9: true}, rows, []map[uint64]bool{busy})
		if len(got.Listeners) != 0 || got.BusyKnown || got.Busy != 0 {
			t.Errorf("%+v", got)
		}
	})
}

// TestSaturationFixtureRoot reads a /proc tree written under t.TempDir(): the root is injected,
// fd links are real symlinks to socket:[N] names as the kernel shows them.
func TestSaturationFixtureRoot(t *testing.T) {
	root := t.TempDir()
	mk := func(pid int, links map[string]string) {
		dir := filepath.Join(root, strconv.Itoa(pid), "fd")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for fd, target := range links {
			if err := os.Symlink(target, filepath.Join(dir, fd)); err != nil {
				t.Fatal(err)
			}
		}
		stat := strconv.Itoa(pid) + " (gunicorn: worker [app]) S 100 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 " + strconv.Itoa(1000+pid) + " 0 0\n"
		if err := os.WriteFile(filepath.Join(root, strconv.Itoa(pid), "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk(100, map[string]string{"3": "socket:[41224]", "5": "/tmp/wgunicorn-a"})
	mk(101, map[string]string{"3": "socket:[41224]", "9": "socket:[41301]"})
	mk(102, map[string]string{"3": "socket:[41224]"})
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "100", "net"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "100", "task", "100"), 0o755))
	must(os.WriteFile(filepath.Join(root, "100", "task", "100", "children"), []byte("101 102 "), 0o644))
	must(os.WriteFile(filepath.Join(root, "100", "net", "tcp"), []byte(netTCP), 0o644))
	s, err := NewFS(root).Saturation(100, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if s.HeartbeatAgeMax >= 0 { // the fixture's wgunicorn- link is the master's, and dangling
		t.Errorf("heartbeat age %v from no worker's heartbeat", s.HeartbeatAgeMax)
	}
	if s.Workers != 2 || s.Busy != 1 || !s.BusyKnown || len(s.Listeners) != 1 || s.Listeners[0].Queue != 3 || s.Listeners[0].Addr != "127.0.0.1:8080" {
		t.Errorf("%+v", s)
	}
	if _, err := NewFS(root).Saturation(999, time.Now()); err == nil {
		t.Error("a missing master gave no error")
	}
}

func TestSaturated(t *testing.T) {
	q := []Listener{{Queue: 2}, {Queue: 1}}
	for _, tt := range []struct {
		s    Saturation
		want bool
	}{
		{Saturation{Workers: 2, Busy: 2, BusyKnown: true, Listeners: q}, true},
		{Saturation{Workers: 2, Busy: 1, BusyKnown: true, Listeners: q}, false},
		{Saturation{Workers: 2, Busy: 2, BusyKnown: true, Listeners: []Listener{{Queue: 0}}}, false},
		{Saturation{Workers: 2, Busy: 2, Listeners: q}, false}, // busy unknown
		{Saturation{Listeners: q, BusyKnown: true}, false},     // no workers seen
	} {
		if got := tt.s.Saturated(); got != tt.want {
			t.Errorf("%+v: %v", tt.s, got)
		}
	}
	if n := (Saturation{Listeners: q}).Queued(); n != 3 {
		t.Errorf("Queued %d", n)
	}
}
