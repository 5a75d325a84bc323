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
	now func() time.Time // for the age of leftovers
}

// NewStore uses dir (created on first write, mode 0750).
func NewStore(dir string, r Retention) *Store { return &Store{dir: dir, ret: r, now: time.Now} }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// DefaultDir is /home/LogFiles/gwrap when /home/LogFiles exists (Azure App Service's storage
// that survives restarts, is shared by the app's instances and is visible in its Kudu and log
// tools), else /var/log/gwrap: where operators look for logs and mount a volume to keep them,
// and not /tmp, which is often a tmpfs cleared on restart, costing the container memory it may be
// short of. exists is the caller's check (os.Stat), so the choice is testable.
func DefaultDir(exists func(string) bool) string {
	if exists("/home/LogFiles") {
		return "/home/LogFiles/gwrap"
	}
	return "/var/log/gwrap"
}

// ErrNotFound is returned for a report id that is not in the store.
var ErrNotFound = errors.New("no such report")

// Write stores the report as JSON and HTML, each written atomically (a temp file in the same
// directory, fsync, rename; the temp file is removed on error), then applies retention. The HTML
// is written first: a report is listed by its JSON file, so a failed write leaves neither (and
// never a JSON without its page). It returns the JSON file's path; on error, the path is empty
// unless the report was stored and only retention failed.
func (s *Store) Write(r Report) (string, error) {
	if err := s.mkdir(); err != nil {
		return "", err
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
	htmlPath := filepath.Join(s.dir, r.ID+".html")
	if err := writeAtomic(htmlPath, html.Bytes()); err != nil {
		return "", err
	}
	if err := writeAtomic(path, append(js, '\n')); err != nil {
		os.Remove(htmlPath)
		return "", err
	}
	if err := s.retain(); err != nil {
		return path, err
	}
	return path, nil
}

// mkdir creates the report directory, mode 0750 whatever the umask; an existing one is left
// as it is.
func (s *Store) mkdir() error {
	if st, err := os.Stat(s.dir); err == nil && st.IsDir() {
		return nil
	}
	if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return fmt.Errorf("creating report dir: %w", err)
	}
	if err := os.Chmod(s.dir, 0o750); err != nil {
		return fmt.Errorf("creating report dir: %w", err)
	}
	return nil
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
	ids, _, err := s.scan()
	return ids, err
}

// leftoverAge is how old a temp file or a page without its JSON must be before retention
// removes it: App Service shares /home between instances, so another gwrap may be writing it.
const leftoverAge = 10 * time.Minute

// scan lists the report ids, oldest first, and the leftovers: temp files of a write that was
// cut short (gwrap killed mid-write) and pages whose JSON is gone, older than leftoverAge.
func (s *Store) scan() (ids, leftovers []string, err error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", s.dir, err)
	}
	json := map[string]bool{}
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".json") && !strings.HasPrefix(n, ".") {
			ids = append(ids, strings.TrimSuffix(n, ".json"))
			json[strings.TrimSuffix(n, ".json")] = true
		}
	}
	for _, e := range ents {
		n := e.Name()
		if info, err := e.Info(); err != nil || s.now().Sub(info.ModTime()) < leftoverAge {
			continue
		}
		switch {
		case strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-") && e.Type().IsRegular():
			leftovers = append(leftovers, n)
		case strings.HasSuffix(n, ".html") && !strings.HasPrefix(n, ".") && !json[strings.TrimSuffix(n, ".html")]:
			leftovers = append(leftovers, n)
		}
	}
	sort.Strings(ids)
	return ids, leftovers, nil
}

// retain removes the oldest reports beyond the retention bounds.
func (s *Store) retain() error {
	ids, leftovers, err := s.scan()
	if err != nil {
		return err
	}
	for _, n := range leftovers {
		if err := os.Remove(filepath.Join(s.dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("retention: %w", err)
		}
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
