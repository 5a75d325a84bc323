package flightrec

import "github.com/gwrap/gwrap/probes"

// RecordsProbe reports whether the record keeps one of the watcher's events: all but a followed
// dirty worker's stack (probes.EventStack, every sweep: gwrap's own following, not the worker's
// story). With Records, it is the record's one filter.
func RecordsProbe(ev probes.Event) bool { return ev.Kind != probes.EventStack }

// Probe records one of the watcher's events the record keeps (RecordsProbe): a sample as the
// worker's hot sample, any other as an event with the sample it carries.
func (r *Recorder) Probe(ev probes.Event) {
	switch {
	case !RecordsProbe(ev):
	case ev.Kind == probes.EventSample:
		r.Worker(ev.ID, ev.Sample)
	default:
		r.Event(ev)
	}
}
