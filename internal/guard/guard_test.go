package guard

import (
	"errors"
	"strings"
	"testing"
)

type thing struct{ m map[string]int }

func (t *thing) nilMap() { t.m["x"] = 1 }

//go:noinline
func index(xs []int, i int) int { return xs[i] }

// TestRun: a panic of any kind is recovered, with its message and the line that raised it; a
// function that returns normally gives nil.
func TestRun(t *testing.T) {
	if p := Run("quiet", func() {}); p != nil {
		t.Fatalf("no panic: %v", p)
	}
	for _, tc := range []struct {
		name, msg, where string
		f                func()
	}{
		{"panic with a value", "boom", "guard/guard_test.go", func() { panic("boom") }},
		{"an error", "bad thing", "guard/guard_test.go", func() { panic(errors.New("bad thing")) }},
		{"nil map", "assignment to entry in nil map", "in (*thing).nilMap", func() { (&thing{}).nilMap() }},
		{"index out of range", "index out of range [3] with length 1", "in index", func() { index([]int{1}, 3) }},
		{"nil pointer", "invalid memory address or nil pointer dereference", "guard/guard_test.go", func() {
			var p *thing
			_ = p.m
		}},
		{"huge message", strings.Repeat("x", maxMessage) + "…", "guard/guard_test.go", func() { panic(strings.Repeat("x", 10000)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Run("part", tc.f)
			if p == nil {
				t.Fatal("not recovered")
			}
			if p.Part != "part" || !strings.Contains(p.Message, tc.msg) || !strings.Contains(p.Where, tc.where) {
				t.Errorf("got %+v, want message %q where %q", p, tc.msg, tc.where)
			}
			if strings.HasPrefix(p.Where, "runtime/") || strings.Contains(p.Where, "guard.go") {
				t.Errorf("where names the runtime or the guard: %s", p.Where)
			}
		})
	}
}
