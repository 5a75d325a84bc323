package asuser

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gwrap/gwrap/internal/testkit"
)

func TestParseStatus(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Cred
		err      bool
	}{
		{"setpriv", "Name:\tgunicorn\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\nGroups:\t\n", Cred{UID: 65534, GID: 65534}, false},
		{"effective differs", "Uid:\t0\t1000\t0\t1000\nGid:\t0\t100\t0\t100\nGroups:\t4 27 100 \n", Cred{UID: 1000, GID: 100, Groups: []uint32{4, 27, 100}}, false},
		{"no groups line", "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n", Cred{}, true},
		{"short uid", "Uid:\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n", Cred{}, true},
		{"garbage", "Uid:\tx\ty\tz\tw\nGid:\t0\t0\t0\t0\nGroups:\n", Cred{}, true},
	} {
		got, err := ParseStatus([]byte(tc.in))
		if (err != nil) != tc.err || (!tc.err && !got.Equal(tc.want)) {
			t.Errorf("%s: %v, %v; want %v (error %v)", tc.name, got, err, tc.want, tc.err)
		}
	}
	self, err := Of("/proc", os.Getpid())
	if err != nil || !self.Equal(Self()) {
		t.Errorf("Of(self) = %v, %v; want %v", self, err, Self())
	}
}

// TestDoReadsWithTheirRights: as root, a read done as nobody is refused a file only root may
// read and the file's directory when only root may search it; gwrap's other threads keep root's
// rights throughout.
func TestDoReadsWithTheirRights(t *testing.T) {
	testkit.RequireRoot(t)
	dir := t.TempDir() // 0700, root's
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}
	public, err := os.MkdirTemp("", "asuser-") // t.TempDir's parent is root's 0700
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(public)
	if err := os.Chmod(public, 0o755); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(public, "open")
	if err := os.WriteFile(open, []byte("anyone"), 0o644); err != nil {
		t.Fatal(err)
	}
	nobody := Cred{UID: 65534, GID: 65534}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 { // root reads beside the switched threads, all the while
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := os.ReadFile(secret); err != nil {
					t.Errorf("root lost its rights on another thread: %v", err)
					return
				}
			}
		}()
	}
	ctx := context.Background()
	for range 50 {
		err := Do(ctx, nobody, func() error { _, err := os.ReadFile(secret); return err })
		if !errors.Is(err, os.ErrPermission) {
			t.Errorf("nobody read root's file: %v", err)
			break
		}
		if err := Do(ctx, nobody, func() error { _, err := os.ReadFile(open); return err }); err != nil {
			t.Errorf("nobody could not read a 0644 file: %v", err)
			break
		}
	}
	close(stop)
	wg.Wait()
}

// TestDoDeadline: a function stuck past the deadline costs its caller only the deadline, and
// stuck ones are bounded (ErrBusy) rather than piling up threads.
func TestDoDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	self := Self()
	for range cap(outstanding) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		start := time.Now()
		err := Do(ctx, self, func() error { <-release; return nil })
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Fatalf("stuck function: %v after %v", err, time.Since(start))
		}
	}
	if err := Do(context.Background(), self, func() error { return nil }); !errors.Is(err, ErrBusy) {
		t.Errorf("with %d stuck: %v, want ErrBusy", cap(outstanding), err)
	}
}
