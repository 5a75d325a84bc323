package postmortem

// The vocabulary of causes. postmortem owns it: the classifier decides among these causes and
// words.go says each; /metrics (one series per cause, from the start) and the termination
// message (a count by cause, then the verdicts most important first) are handed Causes in this
// order and know no other. Adding a cause is adding it to vocabulary below, with the sentences
// that say it (summary, advice); TestCausesReachEveryOutput fails for a cause that has no words
// or that an output does not know.

// vocabulary is every cause, most important first: memory (the kernel killed something, or was
// about to), then what needs a configuration change, then the rest. Each cause's meaning is in its
// words (words.go) and advice (advice.go).
var vocabulary = []struct {
	cause   Cause
	meaning string
}{
	{CauseOOMKilled, "the kernel OOM killer killed the worker"},
	{CauseMemoryPressure, "it timed out while the container was near its memory limit"},
	{CauseBootTimeout, "it never finished booting"},
	{CauseCPUStarved, "it wanted CPU but the quota or its neighbours held it back"},
	{CauseCPUBound, "it ran long computing"},
	{CauseBlocked, "it ran long waiting: on the network, the disk, a lock, a sleep"},
	{CauseCrashed, "it died of another signal or exit code"},
	{CauseUnknown, "the evidence does not decide"},
}

// Causes returns every cause, most important first (a copy).
func Causes() []Cause {
	out := make([]Cause, len(vocabulary))
	for i, v := range vocabulary {
		out[i] = v.cause
	}
	return out
}

// CauseNames returns Causes as strings, most important first: what metrics and termlog are
// handed (they do not import postmortem).
func CauseNames() []string {
	out := make([]string, len(vocabulary))
	for i, v := range vocabulary {
		out[i] = string(v.cause)
	}
	return out
}

// Meaning is what the cause means, in a phrase ("" for a string that is not a cause).
func (c Cause) Meaning() string {
	for _, v := range vocabulary {
		if v.cause == c {
			return v.meaning
		}
	}
	return ""
}

// Known reports whether c is one of Causes.
func (c Cause) Known() bool { return c.Meaning() != "" }
