package probes

import (
	"bufio"
	"net"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// TestQuoteCmdline: a child's command line is quoted as one printable line, redacted first,
// bounded, and named by its command alone when no redaction is given.
func TestQuoteCmdline(t *testing.T) {
	hide := func(args []string) []string {
		out := slices.Clone(args)
		for i, a := range out {
			if strings.HasPrefix(a, "--password=") {
				out[i] = "--password=[REDACTED]"
			}
		}
		return out
	}
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		name      string
		in        string
		truncated bool
		redact    func([]string) []string
		want      string
	}{
		{"plain", "sleep\x0040\x00", false, hide, "sleep 40"},
		{"spaces and quotes", "sh\x00-c\x00sleep 40; echo \"done\"\x00", false, hide, `sh -c "sleep 40; echo \"done\""`},
		{"terminal escape and newline", "evil\x00\x1b[2J\nfake line\x00", false, hide, `evil "\x1b[2J\nfake line"`},
		{"invalid UTF-8", "cat\x00\xff\xfe\x00", false, hide, `cat "\xff\xfe"`},
		{"empty argument", "printf\x00\x00x\x00", false, hide, `printf "" x`},
		{"secret", "psql\x00--password=hunter2\x00db\x00", false, hide, "psql --password=[REDACTED] db"},
		{"secret without a redactor", "/usr/bin/psql\x00--password=hunter2\x00", false, nil, "psql…"},
		{"cut when read", "sleep\x004", true, hide, "sleep 4…"},
		{"too long", "echo\x00" + long + "\x00", false, hide, "echo " + long[:maxCommand-5] + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := quoteCmdline([]byte(tc.in), tc.truncated, tc.redact); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestWaitingOnChildrenAndUDP: a worker in wait4 names its child first; one polling names its
// TCP and UDP peers first, then the child; unconnected sockets are no peers.
func TestWaitingOnChildrenAndUDP(t *testing.T) {
	socks := []Socket{
		{Proto: "udp", Local: "127.0.0.1:40000", Remote: "127.0.0.1:42419", State: "ESTABLISHED"},
		{Proto: "udp", Local: "0.0.0.0:5353", Remote: "0.0.0.0:0", State: "CLOSE"},
		{Proto: "tcp", Local: "0.0.0.0:0", Remote: "0.0.0.0:0", State: "CLOSE"},
		{Proto: "udp6", Local: "[::1]:40001", Remote: "[::1]:53", State: "ESTABLISHED"},
	}
	kids := []Child{{PID: 7, Command: "sleep 40"}}
	d := Deep{Sockets: socks, Children: kids, Syscall: "wait4", Wchan: "do_wait"}
	want := []string{"child sleep 40", "udp 127.0.0.1:42419", "udp6 [::1]:53", "wchan do_wait"}
	if got := d.WaitingOn(); !slices.Equal(got, want) {
		t.Errorf("in wait4: %q, want %q", got, want)
	}
	d = Deep{Sockets: socks, Children: kids, Syscall: "poll", Wchan: "do_sys_poll"}
	want = []string{"udp 127.0.0.1:42419", "udp6 [::1]:53", "child sleep 40", "wchan do_sys_poll"}
	if got := d.WaitingOn(); !slices.Equal(got, want) {
		t.Errorf("in poll: %q, want %q", got, want)
	}
}

// TestParseNetUDP: /proc/<pid>/net/udp has tcp's format; a connected socket is state 01.
func TestParseNetUDP(t *testing.T) {
	const in = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
		" 1071: 0100007F:9C40 0100007F:A5B3 01 00000000:00000000 00:00000000 00000000     0        0 5001 2 0000000000000000 0\n" +
		" 1072: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5002 2 0000000000000000 0\n"
	got := sockets(parseNetTCP([]byte(in)), "udp", map[uint64]bool{5001: true, 5002: true})
	want := []Socket{
		{Proto: "udp", Local: "127.0.0.1:40000", Remote: "127.0.0.1:42419", State: "ESTABLISHED", Inode: 5001},
		{Proto: "udp", Local: "0.0.0.0:5353", Remote: "0.0.0.0:0", State: "CLOSE", Inode: 5002},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestLiveWaitingOnChildAndUDPPeer: a real process that holds a UDP socket connected to a peer
// and waits for its child `sleep 40` is, in its deep sample, waiting on "child sleep 40" first
// and on "udp 127.0.0.1:PORT"; its child's secret argument never shows.
func TestLiveWaitingOnChildAndUDPPeer(t *testing.T) {
	python := testkit.Python(t)
	peer, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	cmd := exec.Command(python, "-c", `import socket, subprocess, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", int(sys.argv[1])))
child = subprocess.Popen(["sleep", "40"])
secret = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(40)", "--password=hunter2"])
print("started", flush=True)
child.wait()`, strings.TrimPrefix(peer.LocalAddr().String(), "127.0.0.1:"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its children too are killed at the end
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "started\n" {
		t.Fatalf("client: %q %v", line, err)
	}
	fs := NewFS("/proc").RedactArgs(func(args []string) []string {
		out := slices.Clone(args)
		for i, a := range out {
			if strings.HasPrefix(a, "--password=") {
				out[i] = "--password=[REDACTED]"
			}
		}
		return out
	})
	wantUDP := "udp " + peer.LocalAddr().String()
	var wo []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		d, err := fs.Deep(cmd.Process.Pid, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		wo = d.WaitingOn()
		// Wait for it to block in wait4 with both children running.
		if len(d.Children) == 2 && slices.Contains(wo, wantUDP) && d.waitsForChild() {
			if !strings.HasPrefix(wo[0], "child ") || !strings.HasPrefix(wo[1], "child ") || !slices.Contains(wo[:2], "child sleep 40") {
				t.Errorf("waiting on %q, want its two children first, one of them child sleep 40", wo)
			}
			for _, w := range wo {
				if strings.Contains(w, "hunter2") {
					t.Errorf("a child's secret argument shows: %q", w)
				}
			}
			if !slices.ContainsFunc(wo, func(w string) bool { return strings.Contains(w, "--password=[REDACTED]") }) {
				t.Errorf("the second child is not named with its argument redacted: %q", wo)
			}
			t.Logf("waiting on %q (syscall %s, wchan %s)", wo, d.Syscall, d.Wchan)
			return
		}
	}
	t.Errorf("waiting on %q, want child sleep 40 and %q", wo, wantUDP)
}
