package postmortem

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/safedir"
)

// Retention bounds what a Store keeps; zero means no bound.
type Retention struct {
	MaxCount int   // reports (a JSON and its HTML count as one)
	MaxBytes int64 // bytes of JSON and HTML together
}

// Store keeps reports in a directory: <id>.json and <id>.html.
//
// The directory may hold other people's files (a report dir pointed at a shared volume or a web
// root), so the store touches only what it can prove is its own. A file is a report when all of
// these hold: its name is a report id (20261125T034236.123Z-4242) with .json, it is a regular
// file (never followed through a symlink, never a FIFO or a device), it is at most maxReportSize,
// and it begins with gwrap's schema field. Only such reports are listed, counted for retention or
// deleted (with their page, <id>.html, when that is a regular file too). A page without its JSON
// is removed only when its name is a report id and it begins as gwrap's page does; a temp file
// only when its name is that of gwrap's temp files for a report id. The report just written is
// never deleted by retention.
//
// Every file is opened relative to one descriptor of the directory (package safedir), with
// O_NOFOLLOW and O_NONBLOCK, and checked with fstat before it is read; what retention deletes
// must also be gwrap's own (its owner, one link): the directory may be one the app's user can
// write (an emptyDir is mode 0777), and gwrap is root.
type Store struct {
	dir string
	ret Retention
	now func() time.Time // for the age of leftovers

	mu      sync.Mutex
	d       *safedir.Dir // opened on first use
	refused error        // a symlinked or non-directory report dir: nothing is written there
}

// NewStore uses dir (created on first write, mode 0750).
func NewStore(dir string, r Retention) *Store { return &Store{dir: dir, ret: r, now: time.Now} }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Path is where Write puts the JSON of the report with this id: gwrap announces a post-mortem
// with its path before the write (which may be slow) is done.
func (s *Store) Path(id string) string { return filepath.Join(s.dir, id+".json") }

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

// ErrRefused is returned for a report dir gwrap will not use: a symlink or not a directory.
var ErrRefused = errors.New("report dir refused")

// maxReportSize bounds what is read as a report: gwrap's are tens of KiB; anything bigger is not
// one of them, and must not cost the reader its memory.
const maxReportSize = 16 << 20

// idPattern is a report id: the incident's time and the worker's pid (NewReport), then the host
// it was written on (the engine adds it: instances of one App Service app share /home).
var idPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9]{1,10}(?:-[A-Za-z0-9_-]{1,40})?$`)

// tempPattern is a temp file of writeAtomic for a report's JSON or page.
var tempPattern = regexp.MustCompile(`^\.([0-9]{8}T[0-9]{6}\.[0-9]{3}Z-[0-9]{1,10}(?:-[A-Za-z0-9_-]{1,40})?)\.(?:json|html)\.tmp-[0-9a-f]+$`)

// schemaPrefix is how every report's JSON begins (json.MarshalIndent, Schema the first field);
// any version of the schema is gwrap's.
var schemaPrefix = regexp.MustCompile(`^\{\s*"schema":\s*"gwrap\.postmortem/v[0-9]+"`)

// pageMark is in the first lines of every report's page (render.go).
const pageMark = "<title>gwrap post-mortem:"

// Check is what gwrap calls at start-up, so that a report dir that cannot be used is said once,
// then, instead of at the first incident: it refuses (for good: Write fails with ErrRefused) a
// dir that is a symlink or not a directory, creates a missing one, and tries to create and remove
// a file there.
func (s *Store) Check() error {
	d, err := s.open(true)
	if err != nil {
		return err
	}
	f, name, err := d.CreateTemp(".gwrap-check.tmp-")
	if err != nil {
		return fmt.Errorf("report dir %s is not writable, post-mortems will be lost: %w", s.dir, err)
	}
	f.Close()
	if err := d.RemoveOwn(name); err != nil {
		return fmt.Errorf("report dir %s: removing %s: %w", s.dir, name, err)
	}
	return nil
}

// Write stores the report as JSON and HTML, each written atomically (a temp file in the same
// directory, fsync, rename; the temp file is removed on error), then applies retention. The HTML
// is written first: a report is listed by its JSON file, so a failed write leaves neither (and
// never a JSON without its page). It returns the JSON file's path; on error, the path is empty
// unless the report was stored and only retention failed.
func (s *Store) Write(r Report) (string, error) {
	if !idPattern.MatchString(r.ID) {
		return "", fmt.Errorf("report id %q is not one gwrap makes", r.ID)
	}
	d, err := s.open(true)
	if err != nil {
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
	name, page := r.ID+".json", r.ID+".html"
	if err := replaceable(d, name); err != nil {
		return "", err
	}
	if err := replaceable(d, page); err != nil {
		return "", err
	}
	if err := writeAtomic(d, page, html.Bytes()); err != nil {
		return "", err
	}
	if err := writeAtomic(d, name, append(js, '\n')); err != nil {
		_ = d.RemoveOwn(page)
		return "", err
	}
	path := s.Path(r.ID)
	if err := s.retain(d, r.ID); err != nil {
		return path, err
	}
	return path, nil
}

// replaceable refuses to rename over something at name that is not a regular file (a directory,
// a symlink someone placed there): only a previous report of the same id is replaced.
func replaceable(d *safedir.Dir, name string) error {
	st, err := d.Stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Join(d.Path(), name), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("writing %s: %w: something that is not a regular file is in the way", filepath.Join(d.Path(), name), ErrRefused)
	}
	return nil
}

// open returns the directory's descriptor, opened on first use (and again when the directory was
// removed meanwhile). With create it makes a missing directory, mode 0750 whatever the umask;
// an existing one is left as it is. A symlink or a non-directory is refused for good: a report
// dir pointing at /etc must not be followed silently.
func (s *Store) open(create bool) (*safedir.Dir, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refused != nil {
		return nil, s.refused
	}
	if s.d != nil && !s.d.Gone() {
		return s.d, nil
	}
	if s.d != nil {
		s.d.Close()
		s.d = nil
	}
	if create {
		if _, err := os.Lstat(s.dir); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(s.dir, 0o750); err != nil {
				return nil, fmt.Errorf("creating report dir: %w", err)
			}
			if err := os.Chmod(s.dir, 0o750); err != nil {
				return nil, fmt.Errorf("creating report dir: %w", err)
			}
		}
	}
	d, err := safedir.Open(s.dir)
	if errors.Is(err, safedir.ErrRefused) {
		hint := ""
		if st, lerr := os.Lstat(s.dir); lerr == nil && st.Mode()&fs.ModeSymlink != 0 {
			hint = "; give the real directory (or a new one) as --report-dir"
		}
		s.refused = fmt.Errorf("%w: %w%s", ErrRefused, err, hint)
		return nil, s.refused
	}
	if err != nil {
		return nil, fmt.Errorf("report dir: %w", err)
	}
	s.d = d
	return d, nil
}

// writeAtomic writes name in d through a temp file: created new (O_EXCL, never through a
// planted link), fsynced, renamed into place; removed on error.
func writeAtomic(d *safedir.Dir, name string, data []byte) (err error) {
	path := filepath.Join(d.Path(), name)
	f, tmp, err := d.CreateTemp("." + name + ".tmp-")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			_ = d.RemoveOwn(tmp)
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
	if err = d.Rename(tmp, name); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// ours tells whether <id>.json in d is one of gwrap's reports, and its size with its page.
func ours(d *safedir.Dir, id string) (int64, bool) {
	st, err := d.Stat(id + ".json")
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size > maxReportSize {
		return 0, false
	}
	head, err := readHead(d, id+".json", 256)
	if err != nil || !schemaPrefix.Match(head) {
		return 0, false
	}
	size := st.Size
	if hs, err := d.Stat(id + ".html"); err == nil && hs.Mode&unix.S_IFMT == unix.S_IFREG {
		size += hs.Size
	}
	return size, true
}

// ids lists the report ids in the store, oldest first (ids start with the incident's time).
func (s *Store) ids() ([]string, error) {
	d, err := s.open(false)
	if err != nil {
		return nil, err
	}
	ids, _, _, err := s.scan(d)
	return ids, err
}

// leftoverAge is how old a temp file or a page without its JSON must be before retention
// removes it: App Service shares /home between instances, so another gwrap may be writing it.
const leftoverAge = 10 * time.Minute

// scan lists gwrap's reports (see Store), oldest first, with their sizes, and gwrap's leftovers:
// temp files of a write that was cut short (gwrap killed mid-write) and pages whose JSON is gone,
// older than leftoverAge. Everything else in the directory is not looked at twice.
func (s *Store) scan(d *safedir.Dir) (ids []string, sizes map[string]int64, leftovers []string, err error) {
	ents, err := d.List()
	if err != nil {
		return nil, nil, nil, err
	}
	sizes = map[string]int64{}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name, ".json")
		if !ok || !e.Regular() || !idPattern.MatchString(id) {
			continue
		}
		if size, mine := ours(d, id); mine {
			ids = append(ids, id)
			sizes[id] = size
		}
	}
	for _, e := range ents {
		n := e.Name
		if !e.Regular() {
			continue
		}
		var candidate bool
		if m := tempPattern.FindStringSubmatch(n); m != nil {
			candidate = true
		} else if id, ok := strings.CutSuffix(n, ".html"); ok && idPattern.MatchString(id) {
			if _, has := sizes[id]; !has {
				head, err := readHead(d, n, 512)
				candidate = err == nil && bytes.Contains(head, []byte(pageMark))
			}
		}
		if !candidate {
			continue
		}
		if mtime := time.Unix(e.Stat.Mtim.Unix()); s.now().Sub(mtime) < leftoverAge {
			continue
		}
		leftovers = append(leftovers, n)
	}
	sort.Strings(ids)
	return ids, sizes, leftovers, nil
}

// retain removes the oldest of gwrap's reports beyond the retention bounds, never keep (the
// report just written) and never anything that is not gwrap's.
func (s *Store) retain(d *safedir.Dir, keep string) error {
	ids, sizes, leftovers, err := s.scan(d)
	if err != nil {
		return err
	}
	for _, n := range leftovers {
		if err := d.RemoveOwn(n); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, safedir.ErrRefused) {
			return fmt.Errorf("retention: %w", err)
		}
	}
	var total int64
	for _, id := range ids {
		total += sizes[id]
	}
	count := len(ids)
	for _, id := range ids {
		over := (s.ret.MaxCount > 0 && count > s.ret.MaxCount) || (s.ret.MaxBytes > 0 && total > s.ret.MaxBytes)
		if !over {
			break
		}
		if id == keep {
			continue
		}
		if err := remove(d, id); err != nil {
			return err
		}
		count--
		total -= sizes[id]
	}
	return nil
}

// remove deletes one of gwrap's reports: its JSON, and its page when that is gwrap's own too. A
// report that is not gwrap's own file (another user's copy, a hard link) is left alone.
func remove(d *safedir.Dir, id string) error {
	if err := d.RemoveOwn(id + ".json"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		if errors.Is(err, safedir.ErrRefused) {
			return nil
		}
		return fmt.Errorf("retention: %w", err)
	}
	if err := d.RemoveOwn(id + ".html"); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, safedir.ErrRefused) {
		return fmt.Errorf("retention: %w", err)
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
	if !idPattern.MatchString(id) {
		return Report{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	d, err := s.open(false)
	if errors.Is(err, fs.ErrNotExist) {
		return Report{}, fmt.Errorf("%w: %s in %s", ErrNotFound, id, s.dir)
	}
	if err != nil {
		return Report{}, err
	}
	b, err := readRegular(d, id+".json", maxReportSize)
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
