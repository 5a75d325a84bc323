package probes

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// TestLiveUnixDiagPeers: the kernel's sock_diag names the peer of a real connected unix socket,
// and /proc/self/net/unix gives the listener's path for it.
func TestLiveUnixDiagPeers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Until the server accepts, the peer is an embryo socket without an inode (the kernel
	// reports peer 0): a real server such as PostgreSQL accepted long before the worker waits.
	srv := <-accepted
	defer srv.Close()
	f, err := c.(*net.UnixConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	peers, err := netlinkUnixDiag{}.Peers(map[uint64]bool{st.Ino: true})
	if err != nil {
		t.Fatal(err)
	}
	peer, ok := peers[st.Ino]
	if !ok || len(peers) != 1 {
		t.Fatalf("peers of %d: %v", st.Ino, peers)
	}
	b, err := os.ReadFile("/proc/self/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	if got := unixPaths(b)[peer]; got != path {
		t.Errorf("peer %d has path %q, want %q", peer, got, path)
	}
}

// TestLiveWorkerWaitingOnUnixPeer: a process connected to a unix socket server and blocked
// reading from it is "waiting on unix PATH" in its deep sample.
func TestLiveWorkerWaitingOnUnixPeer(t *testing.T) {
	python := testkit.Python(t)
	path := filepath.Join(t.TempDir(), ".s.PGSQL.5432")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold the connection open, answer nothing
		}
	}()
	cmd := exec.Command(python, "-c", `import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
print("connected", flush=True)
s.recv(1)`, path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "connected\n" {
		t.Fatalf("client: %q %v", line, err)
	}
	want := "unix " + path
	var wo []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		d, err := NewFS("/proc").Deep(cmd.Process.Pid, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		// Wait for it to block in recv: then the wait channel is there too.
		if wo = d.WaitingOn(); slices.Contains(wo, want) && d.Wchan != "" && d.Wchan != "0" {
			if wo[0] != want || !strings.HasPrefix(wo[len(wo)-1], "wchan ") {
				t.Errorf("waiting on %v, want %q first and the wait channel last", wo, want)
			}
			t.Logf("waiting on %v", wo)
			return
		}
	}
	t.Errorf("waiting on %v, want %q", wo, want)
}
