package postmortem

import (
	"testing"
	"time"
)

// TestEveryCauseIsSaid: every cause of the vocabulary has a meaning and a summary sentence, and
// the vocabulary names each cause once. A cause added to the vocabulary without its words in
// summary (words.go) fails here; one added to decide without the vocabulary fails
// TestDecide.
func TestEveryCauseIsSaid(t *testing.T) {
	seen := map[Cause]bool{}
	f := Facts{PID: 812, Timeout: 30 * time.Second, Silence: 31 * time.Second, CPU: 50, CPUKnown: true}
	for _, c := range Causes() {
		if seen[c] {
			t.Errorf("%s is twice in the vocabulary", c)
		}
		seen[c] = true
		if !c.Known() || c.Meaning() == "" {
			t.Errorf("%s has no meaning", c)
		}
		if s := summary(f, Decision{Cause: c}); s == "" {
			t.Errorf("%s has no summary sentence", c)
		}
	}
	if Cause("made_up").Known() {
		t.Error("a made-up cause is known")
	}
	if len(CauseNames()) != len(Causes()) || CauseNames()[0] != string(CauseOOMKilled) {
		t.Errorf("CauseNames %v", CauseNames())
	}
}
