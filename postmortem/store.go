package postmortem

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Retention bounds what a Store keeps; zero means no bound.
type Retention struct {
	MaxCount int   // reports (a JSON and its HTML count as one)
	MaxBytes int64 // bytes of JSON and HTML together
}

// Store keeps reports in a directory: <id>.json and <id>.html.
type Store struct {
	dir string
	ret Retention
}

// NewStore uses dir (created on first write, mode 0750).
func NewStore(dir string, r Retention) *Store { return &Store{dir: dir, ret: r} }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// DefaultDir is /home/LogFiles/gwrap when /home/LogFiles exists (Azure App Service's storage that
// survives restarts and is visible in its log stream tools), else /var/log/gwrap (mount a volume
// there to keep reports).
func DefaultDir(exists func(string) bool) string {
	if exists("/home/LogFiles") {
		return "/home/LogFiles/gwrap"
	}
	return "/var/log/gwrap"
}

// ErrNotFound is returned for a report id that is not in the store.
var ErrNotFound = errors.New("no such report")

// Write stores the report as JSON and HTML, each written atomically (a temp file in the same
// directory, fsync, rename; the temp file is removed on error), then applies retention. It
// returns the JSON file's path.
func (s *Store) Write(r Report) (string, error) {
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return "", fmt.Errorf("report dir: %w", err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encoding report %s: %w", r.ID, err)
	}
	var html bytes.Buffer
	if err := WriteHTML(&html, r); err != nil {
		return "", fmt.Errorf("rendering report %s: %w", r.ID, err)
	}
	path := filepath.Join(s.dir, r.ID+".json")
	if err := writeAtomic(path, append(js, '\n')); err != nil {
		return "", err
	}
	if err := writeAtomic(filepath.Join(s.dir, r.ID+".html"), html.Bytes()); err != nil {
		return path, err
	}
	return path, s.retain()
}

func writeAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o640); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// ids lists the report ids in the store, oldest first (ids start with the incident's time).
func (s *Store) ids() ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", s.dir, err)
	}
	var ids []string
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".json") && !strings.HasPrefix(n, ".") {
			ids = append(ids, strings.TrimSuffix(n, ".json"))
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// retain removes the oldest reports beyond the retention bounds.
func (s *Store) retain() error {
	ids, err := s.ids()
	if err != nil {
		return err
	}
	sizes := make([]int64, len(ids))
	var total int64
	for i, id := range ids {
		for _, ext := range []string{".json", ".html"} {
			if st, err := os.Stat(filepath.Join(s.dir, id+ext)); err == nil {
				sizes[i] += st.Size()
			}
		}
		total += sizes[i]
	}
	for i := 0; i < len(ids)-1; i++ { // never remove the newest
		over := (s.ret.MaxCount > 0 && len(ids)-i > s.ret.MaxCount) || (s.ret.MaxBytes > 0 && total > s.ret.MaxBytes)
		if !over {
			break
		}
		for _, ext := range []string{".json", ".html"} {
			if err := os.Remove(filepath.Join(s.dir, ids[i]+ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("retention: %w", err)
			}
		}
		total -= sizes[i]
	}
	return nil
}

// Summary is one line of `gwrap report list`.
type Summary struct {
	ID      string    `json:"id"`
	At      time.Time `json:"at"`
	PID     int       `json:"pid"`
	Kind    Kind      `json:"kind"`
	Cause   Cause     `json:"cause"`
	Summary string    `json:"summary"`
	Path    string    `json:"path"`
}

// List returns every report's summary, oldest first; unreadable files are skipped.
func (s *Store) List() ([]Summary, error) {
	ids, err := s.ids()
	if err != nil {
		return nil, err
	}
	out := []Summary{}
	for _, id := range ids {
		r, err := s.Get(id)
		if err != nil {
			continue
		}
		out = append(out, Summary{ID: r.ID, At: r.Incident.At, PID: r.Incident.PID, Kind: r.Incident.Kind,
			Cause: r.Verdict.Cause, Summary: r.Verdict.Summary, Path: filepath.Join(s.dir, id+".json")})
	}
	return out, nil
}

// Get reads one report.
func (s *Store) Get(id string) (Report, error) {
	if id == "" || strings.ContainsAny(id, `/\`) || strings.HasPrefix(id, ".") {
		return Report{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, id+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return Report{}, fmt.Errorf("%w: %s in %s", ErrNotFound, id, s.dir)
	}
	if err != nil {
		return Report{}, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return Report{}, fmt.Errorf("report %s: %w", id, err)
	}
	if r.Schema != Schema {
		return Report{}, fmt.Errorf("report %s: schema %q, want %q", id, r.Schema, Schema)
	}
	return r, nil
}

// Latest reads the newest report.
func (s *Store) Latest() (Report, error) {
	ids, err := s.ids()
	if err != nil {
		return Report{}, err
	}
	if len(ids) == 0 {
		return Report{}, fmt.Errorf("%w: %s is empty", ErrNotFound, s.dir)
	}
	return s.Get(ids[len(ids)-1])
}
