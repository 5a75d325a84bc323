package group

import (
	"errors"
	"testing"
)

func TestFirstReturnInterruptsAll(t *testing.T) {
	var g Group
	first := errors.New("first")
	stop := make(chan struct{})
	var interrupted []error
	g.Add(func() error { return first }, func(err error) { interrupted = append(interrupted, err) })
	g.Add(func() error { <-stop; return nil }, func(err error) {
		interrupted = append(interrupted, err)
		close(stop)
	})
	if err := g.Run(); !errors.Is(err, first) {
		t.Fatalf("Run = %v, want %v", err, first)
	}
	if len(interrupted) != 2 || interrupted[0] != first || interrupted[1] != first {
		t.Fatalf("interrupts = %v, want both with the first error", interrupted)
	}
}

func TestRunWaitsForEveryActor(t *testing.T) {
	var g Group
	release := make(chan struct{})
	done := false
	g.Add(func() error { return nil }, func(error) {})
	g.Add(func() error { <-release; done = true; return nil }, func(error) { close(release) })
	if err := g.Run(); err != nil {
		t.Fatal(err)
	}
	if !done {
		t.Fatal("Run returned before the slow actor finished")
	}
}

func TestEmpty(t *testing.T) {
	var g Group
	if err := g.Run(); err != nil {
		t.Fatal(err)
	}
}
