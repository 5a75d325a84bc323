package pystack

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

// TestLiveMasterReportsSettings: a custom application (`python3 server.py`, settings set in
// Python) reports its master's effective settings, only those asked for, on every release.
func TestLiveMasterReportsSettings(t *testing.T) {
	testkit.RequireRoot(t)
	for _, r := range testkit.Releases(t) {
		t.Run(r.Version, func(t *testing.T) {
			h, err := Install(Options{Settings: []string{"timeout", "workers", "worker_class", "bind", "raw_env_missing"}})
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			sock := filepath.Join(t.TempDir(), "g.sock")
			cmd := exec.Command(testkit.Python(t), filepath.Join(testkit.AppsDir(), "server.py"))
			cmd.Env = h.Env(append(append(os.Environ(), r.Env(t)...),
				`SERVER_OPTIONS={"bind": "unix:`+sock+`", "timeout": 7, "workers": 2, "worker_class": "gthread", "raw_env": ["SECRET=x"]}`))
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() }()
			var b []byte
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				if b, err = h.Settings(cmd.Process.Pid); err == nil || !errors.Is(err, ErrNoSettings) || time.Now().After(deadline) {
					break
				}
			}
			if err != nil {
				t.Fatalf("no settings from the master: %v", err)
			}
			var got struct {
				Version string         `json:"version"`
				Values  map[string]any `json:"values"`
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			if got.Version != r.Version || got.Values["timeout"] != 7.0 || got.Values["workers"] != 2.0 ||
				got.Values["worker_class"] != "gthread" || len(got.Values) != 4 {
				t.Errorf("reported %s", b)
			}
		})
	}
}
