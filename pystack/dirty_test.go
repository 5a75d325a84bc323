package pystack

import (
	"os"
	"testing"
)

func TestDirtyCall(t *testing.T) {
	b, err := os.ReadFile("testdata/dumps/dirty-sleep.txt") // a dirty worker of 26.2.2 in Heavy.sleep
	if err != nil {
		t.Fatal(err)
	}
	st, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if c := st.DirtyCall(); !c.Running || c.Action != "sleep" || c.Threads != 1 {
		t.Errorf("%+v", c)
	}
	if top, ok := st.Top(); !ok || top.String() != "apps/dirty.py:33 in sleep" {
		t.Errorf("top %v", top)
	}
	// Idle: the executor's thread waits for work; the main thread runs the event loop.
	idle := Stack{Threads: []Thread{
		{ID: "0x1", Frames: []Frame{{"/usr/lib/python3.11/concurrent/futures/thread.py", 81, "_worker"}, {"/usr/lib/python3.11/queue.py", 171, "get"}}},
		st.Threads[1]}}
	if c := idle.DirtyCall(); c.Running || c.Action != "" {
		t.Errorf("idle: %+v", c)
	}
	// An app with a __call__ of its own: running, the action not named.
	own := Stack{Threads: []Thread{{Frames: []Frame{
		{"/x/dist-packages/gunicorn/dirty/worker.py", 486, "<lambda>"}, {"/app/ml.py", 10, "__call__"}, {"/app/ml.py", 20, "predict"}}}}}
	if c := own.DirtyCall(); !c.Running || c.Action != "" {
		t.Errorf("own __call__: %+v", c)
	}
}
