// Package group runs gwrap's long-lived parts as an actor group, after oklog/run: each actor is
// an execute function and an interrupt function; the first execute to return interrupts all the
// others, and Run returns only when every execute has returned.
package group

// Group is a set of actors. The zero value is ready to use.
type Group struct {
	actors []actor
}

type actor struct {
	execute   func() error
	interrupt func(error)
}

// Add registers an actor. execute runs in its own goroutine; interrupt must make it return soon.
func (g *Group) Add(execute func() error, interrupt func(error)) {
	g.actors = append(g.actors, actor{execute, interrupt})
}

// Run starts every actor, waits for the first to return, interrupts all of them with its error,
// waits for all to return, and returns that first error.
func (g *Group) Run() error {
	if len(g.actors) == 0 {
		return nil
	}
	errs := make(chan error, len(g.actors))
	for _, a := range g.actors {
		go func() { errs <- a.execute() }()
	}
	err := <-errs
	for _, a := range g.actors {
		a.interrupt(err)
	}
	for i := 1; i < cap(errs); i++ {
		<-errs
	}
	return err
}
