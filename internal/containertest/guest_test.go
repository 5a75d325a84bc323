//go:build v2guest

package containertest

import (
	"os"
	"testing"
)

// TestInGuest runs the cases that apply to cgroup v2, inside the guest of scripts/v2vm.sh where
// TestContainerCgroupV2 runs it: podman with crun, the image loaded there, on the guest's
// network; code runs several times slower than on the host (emulated CPU).
func TestInGuest(t *testing.T) {
	image := os.Getenv("GWRAP_TEST_IMAGE")
	if image == "" {
		t.Fatal("GWRAP_TEST_IMAGE is not set (TestContainerCgroupV2 sets it)")
	}
	e := &engine{image: image, runtime: "crun", cgroup: 2, slow: 5, timeout: 8, hostNetwork: true}
	e.check(t)
	for _, c := range cases {
		if c.where&onV2 != 0 {
			t.Run(c.name, func(t *testing.T) { c.run(t, e) })
		}
	}
}
