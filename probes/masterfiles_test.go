package probes

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestMasterFilesFollowTheProcess: the master's files, kept open, read its process while it
// lives; once it is reaped the listing fails (the files are dropped, not read as another
// process), and another master is read from its own files.
func TestMasterFilesFollowTheProcess(t *testing.T) {
	start := func() *exec.Cmd {
		cmd := exec.Command("sh", "-c", "sleep 60 & wait")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	f := NewFS("/proc")
	one := start()
	kids := waitChildren(t, f, one.Process.Pid, 1)
	stat := f.master.stat
	if stat == nil || f.master.children == nil {
		t.Fatal("the master's files are not kept open")
	}
	if again := waitChildren(t, f, one.Process.Pid, 1); again[0] != kids[0] || f.master.stat != stat {
		t.Errorf("second listing %v (files reopened: %v), want %v", again, f.master.stat != stat, kids)
	}
	syscall.Kill(-one.Process.Pid, syscall.SIGKILL)
	one.Wait()
	if _, err := f.Children(one.Process.Pid); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("reaped master: %v", err)
	}
	if f.master.stat != nil {
		t.Error("the reaped master's stat file is still held")
	}
	two := start()
	waitChildren(t, f, two.Process.Pid, 1)
	if f.master.pid != two.Process.Pid {
		t.Errorf("files held for %d, want the new master %d", f.master.pid, two.Process.Pid)
	}
}

// waitChildren lists master's children until there are n, for up to 5 s.
func waitChildren(t *testing.T, f FS, master, n int) []ID {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		kids, err := f.Children(master)
		if err != nil {
			t.Fatal(err)
		}
		if len(kids) == n {
			return kids
		}
		if time.Now().After(deadline) {
			t.Fatalf("children %v, want %d", kids, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestChildrenOfOneThreadMaster: a one-thread master's children are read from its main thread's
// children file, kept open across sweeps, and a child forked later is seen; a master with
// threads (this test's process) is listed thread by thread, and its children are found too.
func TestChildrenOfOneThreadMaster(t *testing.T) {
	sh := exec.Command("sh", "-c", "sleep 60 & sleep 60 & read x; sleep 60 & wait")
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	in, err := sh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { syscall.Kill(-sh.Process.Pid, syscall.SIGKILL); sh.Process.Kill(); sh.Wait() }()
	f := NewFS("/proc")
	master := sh.Process.Pid
	first := waitChildren(t, f, master, 2)
	kidsFile := f.master.children
	if kidsFile == nil {
		t.Fatal("a one-thread master's children file is not kept open")
	}
	in.Write([]byte("go\n"))
	later := waitChildren(t, f, master, 3)
	if f.master.children != kidsFile {
		t.Error("the children file was reopened")
	}
	for _, id := range first {
		if !slices.Contains(later, id) {
			t.Errorf("%v missing from %v", id, later)
		}
	}

	self := exec.Command("sleep", "60")
	if err := self.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { self.Process.Kill(); self.Wait() }()
	kids, err := f.Children(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(kids, func(id ID) bool { return id.PID == self.Process.Pid }) {
		t.Errorf("children of this process %v lack %d", kids, self.Process.Pid)
	}
	if f.master.pid == os.Getpid() && f.master.children != nil {
		t.Error("a master with threads was read from its main thread only")
	}
}
