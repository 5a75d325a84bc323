package gunicorn

// Source says where a setting's value came from.
type Source string

// Where a value can come from, in Gunicorn's precedence order (later wins).
const (
	SourceDefault Source = "default"
	SourceFile    Source = "config_file"
	SourceEnv     Source = "GUNICORN_CMD_ARGS"
	SourceCLI     Source = "command_line"
	SourceUnknown Source = "unknown" // a config file set it in a way that could not be evaluated
)

// Settings are Gunicorn's effective settings for one command line, as far as they can be known.
// Each field that may be unknown has a matching Known/Source entry in Sources, keyed by
// Gunicorn's setting name (timeout, workers, worker_class…).
type Settings struct {
	Timeout         int      `json:"timeout"`          // seconds; 0 disables the check
	GracefulTimeout int      `json:"graceful_timeout"` // seconds
	Workers         int      `json:"workers"`
	WorkerClass     string   `json:"worker_class"` // as given: sync, gthread, gevent, uvicorn.workers.UvicornWorker…
	Threads         int      `json:"threads"`
	WorkerTmpDir    string   `json:"worker_tmp_dir,omitempty"` // "" = the system temp dir
	Bind            []string `json:"bind"`
	ErrorLog        string   `json:"errorlog"`            // "-" = stderr
	AccessLog       string   `json:"accesslog,omitempty"` // "" = off, "-" = stdout
	LogLevel        string   `json:"loglevel"`
	LogConfig       string   `json:"logconfig,omitempty"` // --log-config, logconfig_dict or --log-config-json present
	Syslog          bool     `json:"syslog"`
	CaptureOutput   bool     `json:"capture_output"`
	PreloadApp      bool     `json:"preload_app"`
	MaxRequests     int      `json:"max_requests"`
	LoggerClass     string   `json:"logger_class,omitempty"` // a custom logger class ("" = Gunicorn's own)
	ConfigFile      string   `json:"config_file,omitempty"`  // the file Gunicorn loads, "" if none
	App             string   `json:"app,omitempty"`          // APP_MODULE

	// Dirty workers (Gunicorn 25+): none unless DirtyWorkers > 0 and DirtyApps is set.
	DirtyApps    []string `json:"dirty_apps,omitempty"` // --dirty-app, "module:Class[:N]"
	DirtyWorkers int      `json:"dirty_workers"`        // --dirty-workers (0: no dirty arbiter)
	DirtyTimeout int      `json:"dirty_timeout"`        // --dirty-timeout, seconds (300; 0 disables the checks)
	DirtyThreads int      `json:"dirty_threads"`        // --dirty-threads (1): actions a dirty worker runs at once

	// Sources says where each setting came from, keyed by Gunicorn's setting name.
	Sources map[string]Source `json:"sources,omitempty"`
	// Problems lists what could not be read (a config file that did not evaluate, a value that
	// did not parse); the settings concerned are marked SourceUnknown.
	Problems []string `json:"problems,omitempty"`
}
