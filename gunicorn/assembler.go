package gunicorn

import "strings"

// Assembler turns one stream's lines into complete events: the prefix-less lines that follow an
// error line (its traceback) are attached to that error event, bounded in count and size, and the
// second "exited with code" line that 21.0–23.x print for one exit is marked Repeat. It is not
// safe for concurrent use: one Assembler per stream.
type Assembler struct {
	maxLines, maxBytes int

	pending *Event // an error event still collecting its traceback
	size    int
	fresh   bool // a line arrived since the last FlushIdle

	lastExit Event // the last "exited with code" line without a period
}

// NewAssembler bounds each traceback to maxLines lines and maxBytes bytes.
func NewAssembler(maxLines, maxBytes int) *Assembler {
	return &Assembler{maxLines: maxLines, maxBytes: maxBytes}
}

// Add parses one line. ev is this line's own parse (to relay at once); done lists the events now
// complete, in order: every recognised line as it comes, except an error line, which is complete
// when the next line with a prefix arrives (or on Flush).
func (a *Assembler) Add(line []byte) (ev Event, done []Event) {
	a.fresh = true
	ev = ParseLine(line)
	if a.pending != nil && ev.PID == 0 && ev.Kind == KindRaw {
		a.attach(ev.Line)
		return ev, nil
	}
	done = a.complete()
	switch ev.Kind {
	case KindRaw, KindAccess:
	case KindRequestError, KindWorkerError, KindMasterError, KindDirtyWorkerError:
		p := ev
		a.pending = &p
	case KindExited:
		if strings.HasSuffix(strings.TrimSpace(ev.Message), ".") {
			if a.lastExit.WorkerPID == ev.WorkerPID && a.lastExit.ExitCode == ev.ExitCode {
				ev.Repeat = true
			}
			a.lastExit = Event{}
		} else {
			a.lastExit = ev
		}
		done = append(done, ev)
	default:
		done = append(done, ev)
	}
	return ev, done
}

func (a *Assembler) attach(l string) {
	if len(a.pending.Traceback) >= a.maxLines || a.size >= a.maxBytes {
		return
	}
	if room := a.maxBytes - a.size; len(l) > room {
		l = l[:room]
	}
	a.size += len(l)
	a.pending.Traceback = append(a.pending.Traceback, l)
}

func (a *Assembler) complete() []Event {
	if a.pending == nil {
		return nil
	}
	ev := *a.pending
	a.pending, a.size = nil, 0
	return []Event{ev}
}

// Pending reports whether an error event is still collecting its traceback (FlushIdle has work).
func (a *Assembler) Pending() bool { return a.pending != nil }

// Flush completes whatever is pending (at end of input).
func (a *Assembler) Flush() []Event { return a.complete() }

// FlushIdle completes what is pending only if no line arrived since the previous FlushIdle: call
// it on a timer, and a traceback is never cut while it is still being written.
func (a *Assembler) FlushIdle() []Event {
	if a.fresh {
		a.fresh = false
		return nil
	}
	return a.complete()
}
