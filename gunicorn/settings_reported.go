package gunicorn

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// MaxReported bounds the settings a master reports (pystack's hook writes about 5 KiB).
const MaxReported = 256 << 10

// ErrReported marks a settings report that is not what gwrap's hook writes.
var ErrReported = errors.New("not a settings report")

// reported is what the hook writes: Gunicorn's version and every setting with a plain value.
type reported struct {
	Version string         `json:"version"`
	Values  map[string]any `json:"values"`
}

// ParseReported reads the effective settings a running Gunicorn master reported through gwrap's
// hook (pystack's sitecustomize: JSON {"version": "26.2.2", "values": {"timeout": 30, …}}). The
// report is the app's process's output, so it is untrusted: bounded in size, and each setting gwrap
// uses is taken only when its value has the expected type and a sane range; anything else keeps
// Gunicorn's default and is listed in Problems. Every value taken has SourceMaster.
func ParseReported(b []byte) (Settings, string, error) {
	if len(b) > MaxReported {
		return Settings{}, "", fmt.Errorf("%w: %d bytes, at most %d", ErrReported, len(b), MaxReported)
	}
	var r reported
	if err := json.Unmarshal(b, &r); err != nil {
		return Settings{}, "", fmt.Errorf("%w: %w", ErrReported, err)
	}
	if r.Values == nil {
		return Settings{}, "", fmt.Errorf("%w: no values", ErrReported)
	}
	s := Defaults()
	clean := map[string]any{}
	for _, k := range tracked {
		v, ok := r.Values[k]
		if !ok {
			continue
		}
		if saneReported(k, v) {
			clean[k] = v
			continue
		}
		s.Problems = append(s.Problems, fmt.Sprintf("the master reported %s as %s: ignored", k, truncateValue(v)))
		s.Sources[k] = SourceUnknown
	}
	applyValues(&s, clean, SourceMaster)
	if len(r.Version) > 32 {
		r.Version = ""
	}
	return s, r.Version, nil
}

// saneReported says whether a reported value has the type and range the setting takes.
func saneReported(key string, v any) bool {
	switch key {
	case "timeout", "graceful_timeout", "workers", "threads", "max_requests", "dirty_workers", "dirty_timeout", "dirty_threads":
		n, ok := v.(float64)
		return ok && n >= 0 && n <= 1e7 && n == math.Trunc(n)
	case "syslog", "capture_output", "preload_app":
		_, ok := v.(bool)
		return ok
	case "logconfig_dict":
		_, ok := v.(bool)
		return ok
	case "bind", "dirty_apps":
		l, ok := v.([]any)
		if !ok || len(l) > 64 {
			return false
		}
		for _, x := range l {
			if s, ok := x.(string); !ok || len(s) > 1024 {
				return false
			}
		}
		return true
	case "worker_tmp_dir", "accesslog", "logconfig", "logconfig_json":
		if v == nil {
			return true
		}
		str, ok := v.(string)
		return ok && len(str) <= 4096
	default: // worker_class, errorlog, loglevel, logger_class
		str, ok := v.(string)
		return ok && len(str) <= 4096
	}
}

func truncateValue(v any) string {
	s := fmt.Sprint(v)
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}

// Tracked lists the settings gwrap reads, by Gunicorn's names: what a master is asked to report.
func Tracked() []string { return append([]string(nil), tracked...) }
