package main

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/gwrap/gwrap/engine"
	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/supervisor"
)

// Relay is engine.Emitter's relay of one of Gunicorn's lines.
func (o *output) Relay(stream string, line []byte, parsed gunicorn.Event, _ time.Time) {
	o.relay(supervisor.Stream(stream), line, parsed)
}

// Emit is engine.Emitter's write of one of gwrap's events, its fields in order.
func (o *output) Emit(e engine.Event) {
	level := zerolog.InfoLevel
	switch e.Level {
	case engine.Warn:
		level = zerolog.WarnLevel
	case engine.Error:
		level = zerolog.ErrorLevel
	}
	z := o.event(level, e.Name)
	for _, f := range e.Fields {
		switch v := f.Value.(type) {
		case string:
			z = z.Str(f.Key, v)
		case bool:
			z = z.Bool(f.Key, v)
		case int:
			z = z.Int(f.Key, v)
		case uint64:
			z = z.Uint64(f.Key, v)
		case float64:
			z = z.Float64(f.Key, v)
		case []string:
			z = z.Strs(f.Key, v)
		case []int:
			z = z.Ints(f.Key, v)
		default:
			z = z.Interface(f.Key, v)
		}
	}
	z.Msg(e.Message)
}
