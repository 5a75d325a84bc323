package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// AppsDir is the directory of the Python apps every live test runs (internal/testkit/apps):
// wsgi.py (`wsgi:app`), asgi.py (`asgi:app`, for Uvicorn workers), slowboot.py (`slowboot:app`,
// `slowboot:asgi`) and misbehave.py, which they share.
func AppsDir() string { return appsDir }

var appsDir = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "apps")
}()

// AppShim is an app.py that serves the shared WSGI app (`app:app`, with `hoard` for tests that
// add routes), for tests that run Gunicorn with `--chdir DIR app:app`.
func AppShim() string {
	return fmt.Sprintf("import sys\nsys.dont_write_bytecode = True\nsys.path.insert(0, %q)\nfrom wsgi import app, hoard\n", AppsDir())
}

// Release is one real Gunicorn release the live tests can run: Debian bookworm's installed
// gunicorn (20.1), or a newer python3-gunicorn that scripts/deps.sh unpacked into ReleaseCache.
type Release struct {
	Version string // e.g. "23.0.0"
	Lib     string // the directory to put first on PYTHONPATH; "" for the installed package
}

// ReleaseCache is where scripts/deps.sh unpacks newer releases (gunicorn-<version>/), or
// $GWRAP_GUNICORN_CACHE.
func ReleaseCache() string {
	if d := os.Getenv("GWRAP_GUNICORN_CACHE"); d != "" {
		return d
	}
	return "/var/cache/gwrap-test"
}

// Major is the release's major version number (20, 23, 26); 0 when the version does not parse.
func (r Release) Major() int {
	n, _ := strconv.Atoi(strings.SplitN(r.Version, ".", 2)[0])
	return n
}

// Argv is the command that runs this release with Debian's python3: `python3 -m gunicorn ARGS`.
func (r Release) Argv(t testing.TB, args ...string) []string {
	return append([]string{Python(t), "-m", "gunicorn"}, args...)
}

// Env is what the release and the apps need in the environment: PYTHONPATH with the release's
// own directory first and the apps' directory, no bytecode written into the source tree, and a
// private XDG_RUNTIME_DIR, where Gunicorn 26 makes its control socket (else in $HOME/.gunicorn).
func (r Release) Env(t testing.TB) []string {
	path := AppsDir()
	if r.Lib != "" {
		path = r.Lib + string(os.PathListSeparator) + path
	}
	return []string{"PYTHONPATH=" + path, "PYTHONDONTWRITEBYTECODE=1", "XDG_RUNTIME_DIR=" + t.TempDir()}
}

// Releases lists every Gunicorn release on this machine, oldest first: the installed one and those
// scripts/deps.sh unpacked. It stops the test when the installed one or the unpacked ones are
// missing (run scripts/deps.sh).
func Releases(t testing.TB) []Release {
	t.Helper()
	Gunicorn(t)
	libs := []string{""}
	dirs, _ := filepath.Glob(filepath.Join(ReleaseCache(), "gunicorn-*", "usr", "lib", "python3", "dist-packages"))
	libs = append(libs, dirs...)
	if len(dirs) == 0 {
		Unavailable(t, "no newer Gunicorn release unpacked in %s (run scripts/deps.sh)", ReleaseCache())
	}
	var out []Release
	for _, lib := range libs {
		r := Release{Lib: lib}
		cmd := exec.Command(Python(t), "-c", "import gunicorn; print(gunicorn.__version__)")
		cmd.Env = append(os.Environ(), r.Env(t)...)
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("gunicorn release at %q does not import: %v", lib, err)
		}
		r.Version = strings.TrimSpace(string(b))
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return versionLess(out[i].Version, out[j].Version) })
	return out
}

func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x < y
		}
	}
	return len(as) < len(bs)
}
