package gunicorn

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gwrap/gwrap/internal/asuser"
)

// SettingsInput is what decides Gunicorn's effective settings.
type SettingsInput struct {
	Args    []string      // Gunicorn's arguments, after the program name
	Env     []string      // the environment Gunicorn gets (GUNICORN_CMD_ARGS, WEB_CONCURRENCY, PORT)
	Dir     string        // Gunicorn's working directory (where ./gunicorn.conf.py is looked for)
	Python  string        // interpreter that can import gunicorn; "" = static read only
	Timeout time.Duration // bound for an idle interpreter (default 5 s)
	// MaxTimeout is the bound for an interpreter that keeps using CPU past Timeout (a slow or
	// CPU-throttled machine importing gunicorn); default Timeout, i.e. no extension.
	MaxTimeout time.Duration
	ProcRoot   string // where the interpreter's CPU time is read (default /proc)
	// As, when set, is the identity of the Gunicorn master whose settings these are: a master gwrap
	// did not start itself (behind sh, setpriv, gosu). The evaluator runs as that user, and the
	// config file is read with its rights: the file is the app's, and gwrap is root. Nil: gwrap's
	// own identity, for the Gunicorn gwrap starts, which evaluates the same file as the same user.
	As *asuser.Cred
	// CommandLineOnly reads the command line and GUNICORN_CMD_ARGS and nothing else: no
	// interpreter is run and the config file is not opened (what the file sets is unknown). For a
	// master whose identity gwrap cannot take on.
	CommandLineOnly bool
}

// Defaults are Gunicorn's defaults (identical from 19.9 to 26.1 for these settings).
func Defaults() Settings {
	return Settings{Timeout: 30, GracefulTimeout: 30, Workers: 1, WorkerClass: "sync", Threads: 1,
		Bind: []string{"127.0.0.1:8000"}, ErrorLog: "-", LogLevel: "info", Sources: map[string]Source{},
		DirtyTimeout: 300, DirtyThreads: 1}
}

// CommandArgs returns Gunicorn's arguments when argv runs Gunicorn (`gunicorn …`, `gunicorn3 …`,
// `python -m gunicorn …`), and false otherwise.
func CommandArgs(argv []string) ([]string, bool) {
	if len(argv) == 0 {
		return nil, false
	}
	if strings.HasPrefix(filepath.Base(argv[0]), "gunicorn") {
		return argv[1:], true
	}
	if strings.HasPrefix(filepath.Base(argv[0]), "python") && len(argv) >= 3 && argv[1] == "-m" && argv[2] == "gunicorn" {
		return argv[3:], true
	}
	if strings.HasPrefix(filepath.Base(argv[0]), "python") && len(argv) >= 2 && filepath.Base(argv[1]) == "gunicorn" {
		return argv[2:], true // the master as /proc shows it: python3 /usr/bin/gunicorn …
	}
	return nil, false
}

// FindPython returns the interpreter Gunicorn runs under: argv[0] of `python -m gunicorn`, else
// the interpreter in the gunicorn script's shebang. "" when it cannot tell.
func FindPython(argv []string) string {
	if len(argv) == 0 {
		return ""
	}
	if strings.HasPrefix(filepath.Base(argv[0]), "python") {
		p, _ := exec.LookPath(argv[0])
		return p
	}
	script, err := exec.LookPath(argv[0])
	if err != nil {
		return ""
	}
	b, err := readRegular(script, 256) // argv[0] of a master gwrap did not start is the app's
	if err != nil {
		return ""
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return shebangPython(first)
}

// maxConfigFile bounds a config file read statically: Gunicorn's are a few KiB.
const maxConfigFile = 1 << 20

// readRegular reads at most max bytes of path when it is a regular file, never blocking on a
// FIFO or a device (O_NONBLOCK, then fstat). Symlinks are followed: a config file mounted from a
// Kubernetes ConfigMap is one.
func readRegular(path string, max int) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, int64(max)))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return b, nil
}

// shebangPython reads `#!/usr/bin/python3` or `#!/usr/bin/env python3`.
func shebangPython(line string) string {
	line, ok := strings.CutPrefix(strings.TrimSpace(line), "#!")
	if !ok {
		return ""
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return ""
	}
	if filepath.Base(f[0]) == "env" && len(f) > 1 {
		p, _ := exec.LookPath(f[len(f)-1])
		return p
	}
	if strings.Contains(filepath.Base(f[0]), "python") {
		return f[0]
	}
	return ""
}

// ReadSettings gathers Gunicorn's effective settings with Gunicorn's precedence: defaults, the
// config file, GUNICORN_CMD_ARGS, the command line. With a Python that imports gunicorn, the
// config file is evaluated the way Gunicorn does it (a config file is Python: it computes values,
// reads the environment); otherwise, or when that fails, simple `name = literal` lines are read
// and what cannot be known is marked SourceUnknown with a Problem.
func ReadSettings(ctx context.Context, in SettingsInput) Settings {
	s := Defaults()
	env := envMap(in.Env)
	if v, ok := env["WEB_CONCURRENCY"]; ok {
		if n, err := strconv.Atoi(v); err == nil {
			s.Workers = n
			s.Sources["workers"] = SourceEnv
		}
	}
	if v, ok := env["PORT"]; ok && v != "" {
		s.Bind = []string{"0.0.0.0:" + v}
	}
	envArgs := splitArgs(env["GUNICORN_CMD_ARGS"])
	cli := parseArgs(in.Args)
	fromEnv := parseArgs(envArgs)

	// The config file: -c on the command line, else in GUNICORN_CMD_ARGS, else ./gunicorn.conf.py.
	cfgFile, _ := cli.values["config"].(string)
	if cfgFile == "" {
		cfgFile, _ = fromEnv.values["config"].(string)
	}
	if cfgFile == "" && in.Dir != "" {
		if _, err := os.Stat(filepath.Join(in.Dir, "gunicorn.conf.py")); err == nil {
			cfgFile = "gunicorn.conf.py"
		}
	}
	s.ConfigFile = cfgFile
	s.App = cli.app

	if in.CommandLineOnly && cfgFile != "" {
		for _, k := range tracked {
			s.Sources[k] = SourceUnknown
		}
		s.Problems = append(s.Problems, fmt.Sprintf("%s was not read (it is the app's, and gwrap cannot read it as the app's user): what it sets is unknown", cfgFile))
		in.Python, cfgFile = "", ""
	}
	if in.Python != "" && !in.CommandLineOnly {
		out, err := evaluate(ctx, in)
		if err == nil {
			// Gunicorn itself applied its precedence: take its values, and its word on sources.
			workersFromEnv := s.Sources["workers"] == SourceEnv
			applyValues(&s, out.Values, SourceDefault)
			for k, src := range s.Sources {
				if src != SourceUnknown {
					delete(s.Sources, k)
				}
			}
			for k, src := range out.Sources {
				s.Sources[k] = src
			}
			if _, set := s.Sources["workers"]; !set && workersFromEnv {
				s.Sources["workers"] = SourceEnv // WEB_CONCURRENCY
			}
			return s
		}
		s.Problems = append(s.Problems, fmt.Sprintf("could not evaluate Gunicorn's settings with %s (%v); read statically", in.Python, err))
	}
	if cfgFile != "" {
		vals, unknown, err := readConfigStatic(ctx, in.As, in.Dir, cfgFile)
		if err != nil {
			s.Problems = append(s.Problems, err.Error())
			unknown = tracked
		}
		applyValues(&s, vals, SourceFile)
		for _, k := range unknown {
			s.Sources[k] = SourceUnknown
		}
		if len(unknown) > 0 && err == nil {
			s.Problems = append(s.Problems, fmt.Sprintf("%s computes %s: unknown without evaluating it with Python", cfgFile, strings.Join(unknown, ", ")))
		}
	}
	applyValues(&s, fromEnv.values, SourceEnv)
	applyValues(&s, cli.values, SourceCLI)
	return s
}

// parsed is one argument list's settings, keyed by Gunicorn's setting names.
type parsed struct {
	values map[string]any
	app    string
}

// options maps Gunicorn's command-line spellings to setting names; flag options take no value.
var options = map[string]string{
	"-t": "timeout", "--timeout": "timeout", "--graceful-timeout": "graceful_timeout",
	"-w": "workers", "--workers": "workers", "-k": "worker_class", "--worker-class": "worker_class",
	"--threads": "threads", "--worker-tmp-dir": "worker_tmp_dir", "-b": "bind", "--bind": "bind",
	"--error-logfile": "errorlog", "--log-file": "errorlog", "--access-logfile": "accesslog",
	"--log-level": "loglevel", "--log-config": "logconfig", "--log-config-json": "logconfig_json",
	"--log-syslog": "syslog", "--capture-output": "capture_output", "--preload": "preload_app",
	"--max-requests": "max_requests", "-c": "config", "--config": "config", "--logger-class": "logger_class",
	"--dirty-app": "dirty_apps", "--dirty-workers": "dirty_workers", "--dirty-timeout": "dirty_timeout",
	"--dirty-threads": "dirty_threads",
}

var flagOptions = map[string]bool{
	"--log-syslog": true, "--capture-output": true, "--preload": true, "--reload": true, "--spew": true,
	"--check-config": true, "--print-config": true, "--no-sendfile": true, "--reuse-port": true,
	"--daemon": true, "-D": true, "-R": true, "--enable-stdio-inheritance": true, "-v": true, "--version": true,
	"--strip-header-spaces": true, "--no-control-socket": true, "--disable-redirect-access-to-syslog": true,
	"--suppress-ragged-eofs": true, "--do-handshake-on-connect": true, "--initgroups": true,
}

// parseArgs reads the spellings Gunicorn's argparse accepts: `--timeout 600`, `--timeout=600`,
// `-t 600`, `-t600`; the first positional is APP_MODULE.
func parseArgs(args []string) parsed {
	p := parsed{values: map[string]any{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 < len(args) && p.app == "" {
				p.app = args[i+1]
			}
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			if p.app == "" {
				p.app = a
			}
			continue
		}
		name, val, hasVal := strings.Cut(a, "=")
		if !strings.HasPrefix(a, "--") && len(a) > 2 && !hasVal {
			name, val, hasVal = a[:2], a[2:], true // -t600
		}
		key, known := options[name]
		if flagOptions[name] {
			if known {
				p.values[key] = true
			}
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				break
			}
			i++
			val = args[i]
		}
		if !known {
			continue
		}
		if key == "bind" || key == "dirty_apps" { // action="append"
			prev, _ := p.values[key].([]string)
			p.values[key] = append(prev, val)
			continue
		}
		p.values[key] = val
	}
	return p
}

// applyValues sets the settings gwrap uses from values keyed by setting name.
func applyValues(s *Settings, vals map[string]any, src Source) {
	for k, v := range vals {
		ok := true
		switch k {
		case "timeout":
			s.Timeout, ok = toInt(v)
		case "graceful_timeout":
			s.GracefulTimeout, ok = toInt(v)
		case "workers":
			s.Workers, ok = toInt(v)
		case "threads":
			s.Threads, ok = toInt(v)
		case "max_requests":
			s.MaxRequests, ok = toInt(v)
		case "dirty_workers":
			s.DirtyWorkers, ok = toInt(v)
		case "dirty_timeout":
			s.DirtyTimeout, ok = toInt(v)
		case "dirty_threads":
			s.DirtyThreads, ok = toInt(v)
		case "dirty_apps":
			s.DirtyApps, ok = toStrings(v)
		case "worker_class":
			s.WorkerClass, ok = v.(string)
		case "worker_tmp_dir":
			s.WorkerTmpDir, _ = v.(string)
		case "errorlog":
			s.ErrorLog, ok = v.(string)
		case "accesslog":
			s.AccessLog, _ = v.(string)
		case "loglevel":
			s.LogLevel, ok = v.(string)
		case "logconfig", "logconfig_json", "logconfig_dict":
			if present(v) {
				s.LogConfig = k
			}
		case "logger_class":
			if c, _ := v.(string); c != "" && !strings.Contains(c, "gunicorn.glogging.Logger") {
				s.LoggerClass = c
			}
		case "syslog":
			s.Syslog, ok = toBool(v)
		case "capture_output":
			s.CaptureOutput, ok = toBool(v)
		case "preload_app":
			s.PreloadApp, ok = toBool(v)
		case "bind":
			switch b := v.(type) {
			case []string:
				s.Bind = b
			case []any:
				s.Bind = nil
				for _, x := range b {
					if xs, isStr := x.(string); isStr {
						s.Bind = append(s.Bind, xs)
					}
				}
			case string:
				s.Bind = []string{b}
			}
		case "config", "app":
			continue
		default:
			continue
		}
		if !ok {
			s.Problems = append(s.Problems, fmt.Sprintf("%s: cannot read %v (%s)", k, v, src))
			s.Sources[k] = SourceUnknown
			continue
		}
		s.Sources[k] = src
	}
}

func present(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case string:
		return x != "" && x != "None"
	case map[string]any:
		return len(x) > 0
	case bool:
		return x
	}
	return true
}

func toInt(v any) (int, bool) {
	switch x := v.(type) {
	case float64:
		return int(x), true
	case int:
		return x, true
	case string:
		n, err := strconv.Atoi(strings.TrimSpace(x))
		return n, err == nil
	}
	return 0, false
}

// toStrings reads a list of strings (or one string) as Python's config and the parser give it.
func toStrings(v any) ([]string, bool) {
	switch x := v.(type) {
	case nil:
		return nil, true
	case string:
		return []string{x}, true
	case []string:
		return x, true
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	return nil, false
}

func toBool(v any) (bool, bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case string:
		b, err := strconv.ParseBool(strings.TrimSpace(x))
		return b, err == nil
	}
	return false, false
}

func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// splitArgs splits GUNICORN_CMD_ARGS like Python's shlex.split (quotes and backslashes).
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	inArg := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else {
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, inArg = c, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inArg = true
		case c == ' ' || c == '\t' || c == '\n':
			if inArg {
				out = append(out, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		out = append(out, cur.String())
	}
	return out
}

// tracked are the settings gwrap reads, by Gunicorn's names.
var tracked = []string{"timeout", "graceful_timeout", "workers", "worker_class", "threads", "worker_tmp_dir",
	"bind", "errorlog", "accesslog", "loglevel", "logconfig", "logconfig_dict", "logconfig_json", "syslog",
	"capture_output", "preload_app", "max_requests", "logger_class",
	"dirty_apps", "dirty_workers", "dirty_timeout", "dirty_threads"}

// readConfigStatic reads `name = literal` lines of a Python config file: what a static read can
// know. unknown lists the tracked settings the file assigns with code (`timeout = 60 * 10`).
// With as set, the file is read with that identity's rights (asuser.Do), within a second.
func readConfigStatic(ctx context.Context, as *asuser.Cred, dir, name string) (vals map[string]any, unknown []string, err error) {
	if strings.HasPrefix(name, "python:") {
		return nil, nil, fmt.Errorf("config %s is a Python module: its values are unknown without evaluating it", name)
	}
	path := strings.TrimPrefix(name, "file:")
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	var b []byte
	if as == nil {
		b, err = readRegular(path, maxConfigFile)
	} else {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var got []byte
		err = asuser.Do(ctx, *as, func() error {
			var rerr error
			got, rerr = readRegular(path, maxConfigFile)
			return rerr
		})
		if err == nil {
			b = got
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("config file: %w", err)
	}
	vals, unknown = parseConfigStatic(b)
	return vals, unknown, nil
}

// parseConfigStatic parses top-level `name = literal` assignments (ints, strings, booleans, lists
// of strings). A tracked setting assigned anything else is listed in unknown (a later literal
// assignment makes it known again, as Python would).
func parseConfigStatic(b []byte) (vals map[string]any, unknown []string) {
	vals = map[string]any{}
	computed := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == ' ' || line[0] == '\t' || line[0] == '#' {
			continue
		}
		name, val, ok := strings.Cut(line, "=")
		if !ok || strings.ContainsAny(name, "[]().") {
			continue
		}
		name = strings.TrimSpace(name)
		val = strings.TrimSpace(val)
		if i := strings.Index(val, " #"); i >= 0 {
			val = strings.TrimSpace(val[:i])
		}
		if v, ok := pyLiteral(val); ok {
			if name == "bind" {
				if s, isStr := v.(string); isStr {
					v = []string{s}
				}
			}
			vals[name] = v
			delete(computed, name)
		} else if slices.Contains(tracked, name) {
			delete(vals, name)
			computed[name] = true
		}
	}
	for _, k := range tracked {
		if computed[k] {
			unknown = append(unknown, k)
		}
	}
	return vals, unknown
}

// pyLiteral reads a Python int, string, bool or list of strings.
func pyLiteral(s string) (any, bool) {
	switch s {
	case "True":
		return true, true
	case "False":
		return false, true
	case "None":
		return nil, true
	}
	if n, err := strconv.Atoi(s); err == nil {
		return n, true
	}
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] && !strings.ContainsRune(s[1:len(s)-1], rune(s[0])) {
		return s[1 : len(s)-1], true
	}
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		var out []string
		for _, part := range strings.Split(s[1:len(s)-1], ",") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			v, ok := pyLiteral(part)
			str, isStr := v.(string)
			if !ok || !isStr {
				return nil, false
			}
			out = append(out, str)
		}
		return out, true
	}
	return nil, false
}

// evaluator builds Gunicorn's own Config from the same arguments, environment and directory, as
// Gunicorn's WSGIApplication does (defaults, config file, GUNICORN_CMD_ARGS, command line), without
// importing the app, and prints the settings gwrap uses with where each came from: the command
// line and GUNICORN_CMD_ARGS are parsed again with Gunicorn's own parser (an option given there is
// not None), and a value that differs from a fresh Config's default came from the config file.
const evaluator = `
import json, os, sys
from gunicorn.app.wsgiapp import WSGIApplication
from gunicorn.config import Config
class Probe(WSGIApplication):
    def load(self):
        return None
argv = sys.argv[1:]
sys.argv = ["gunicorn"] + argv
app = Probe("%(prog)s [OPTIONS] [APP_MODULE]")
c = app.cfg
fresh = Config()
parser = c.parser()
given_cli = {k for k, v in vars(parser.parse_args(argv)).items() if v is not None}
given_env = {k for k, v in vars(parser.parse_args(c.get_cmd_args_from_env())).items() if v is not None}
def plain(v):
    if isinstance(v, (int, str, bool, list, dict, type(None))):
        return v
    if isinstance(v, type):
        return "%s.%s" % (v.__module__, v.__name__)
    return str(v)
values, sources = {}, {}
for k in TRACKED:
    if k not in c.settings:
        continue
    v = c.settings[k].get()
    values[k] = plain(v)
    if k in given_cli:
        sources[k] = "command_line"
    elif k in given_env:
        sources[k] = "GUNICORN_CMD_ARGS"
    elif plain(v) != plain(fresh.settings[k].get()):
        sources[k] = "config_file"
print("GWRAP-SETTINGS " + json.dumps({"values": values, "sources": sources}, default=str))
`

// evaluated is the evaluator's output.
type evaluated struct {
	Values  map[string]any    `json:"values"`
	Sources map[string]Source `json:"sources"`
}
