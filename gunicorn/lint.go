package gunicorn

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Warning is a start-up finding about Gunicorn's settings, with a concrete fix.
type Warning struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Fix     string `json:"fix"`
}

// LintInput is what the start-up lint looks at.
type LintInput struct {
	Settings      Settings
	Env           []string      // to recognise the platform
	CPUQuotaCores float64       // the container's CPU quota, 0 = none
	HostCores     int           // what Gunicorn's 2×cores+1 rule of thumb would count
	StopBudget    time.Duration // gwrap's stop budget
}

// appServiceIdle is Azure App Service's front-end idle limit: a request silent this long is cut.
const appServiceIdle = 240

// Platform names the hosting platform from its environment variables ("" when unknown).
func Platform(env []string) string {
	m := envMap(env)
	switch {
	// App Service sets WEBSITE_SITE_NAME, WEBSITE_INSTANCE_ID, WEBSITE_HOSTNAME and
	// WEBSITE_OWNER_NAME in every app's environment (its "app settings" reference).
	case m["WEBSITE_SITE_NAME"] != "" || m["WEBSITE_INSTANCE_ID"] != "" || m["WEBSITE_HOSTNAME"] != "" ||
		m["WEBSITE_OWNER_NAME"] != "" || m["APPSETTING_WEBSITE_SITE_NAME"] != "":
		return "app_service"
	case m["K_SERVICE"] != "":
		return "cloud_run"
	case m["ECS_CONTAINER_METADATA_URI_V4"] != "" || m["ECS_CONTAINER_METADATA_URI"] != "":
		return "ecs"
	case m["KUBERNETES_SERVICE_HOST"] != "":
		return "kubernetes"
	}
	return ""
}

// Lint returns the start-up warnings for these settings, most serious first.
func Lint(in LintInput) []Warning {
	s := in.Settings
	var out []Warning
	add := func(code, msg, fix string) { out = append(out, Warning{code, msg, fix}) }

	// Blind spots first: without Gunicorn's lines gwrap cannot see timeouts.
	out = append(out, BlindSpots(s)...)

	platform := Platform(in.Env)
	switch {
	case s.Sources["timeout"] == SourceUnknown:
		add("timeout_unknown", "the config file computes --timeout and gwrap could not evaluate it: the timeout gwrap reports against may be wrong", "set it on the command line or in GUNICORN_CMD_ARGS, e.g. --timeout 600, or let gwrap evaluate the config (--eval-config, a python that imports gunicorn)")
	case s.Timeout == 0:
		add("timeout_disabled", "--timeout 0 disables Gunicorn's worker timeout: a hung worker is never restarted (gwrap still reports late workers)", "set --timeout, e.g. --timeout 600")
	case platform == "app_service" && s.Timeout < appServiceIdle:
		add("timeout_below_platform", fmt.Sprintf("--timeout %d is below App Service's %d s front-end limit: Gunicorn kills workers on requests the platform would still wait for", s.Timeout, appServiceIdle),
			fmt.Sprintf("GUNICORN_CMD_ARGS=\"--timeout 600\" (or --timeout 600): above %d s, the platform cuts what is too long", appServiceIdle))
	case s.Sources["timeout"] == "" || s.Sources["timeout"] == SourceDefault:
		add("timeout_default", "--timeout is not set: Gunicorn's 30 s default applies, and any request or boot longer than 30 s kills its (sync) worker", "set it to what your slowest request needs, e.g. --timeout 120 (App Service: 600)")
	}

	if in.CPUQuotaCores > 0 {
		limit := 2*int(math.Ceil(in.CPUQuotaCores)) + 1
		conc := s.Workers
		if s.Threads > 1 {
			conc = s.Workers * s.Threads
		}
		if s.Workers > limit {
			add("workers_above_quota", fmt.Sprintf("%d workers on a CPU quota of %.2g cores (Gunicorn's 2×cores+1 rule counts the host's %d cores): CPU-bound requests will be throttled and time out", s.Workers, in.CPUQuotaCores, in.HostCores),
				fmt.Sprintf("--workers %d (2×quota+1), or raise the CPU limit", limit))
		} else if conc > 4*limit {
			add("threads_above_quota", fmt.Sprintf("%d workers × %d threads on a CPU quota of %.2g cores", s.Workers, s.Threads, in.CPUQuotaCores), "fewer threads, or raise the CPU limit")
		}
	}
	if in.StopBudget > 0 && time.Duration(s.GracefulTimeout)*time.Second > in.StopBudget {
		fix := int(in.StopBudget/time.Second) - 1
		add("graceful_timeout_above_budget", fmt.Sprintf("--graceful-timeout %d is longer than gwrap's %v stop budget: on a stop, busy workers are killed before they finish", s.GracefulTimeout, in.StopBudget),
			fmt.Sprintf("--graceful-timeout %d, or raise --stop-budget within the platform's grace period", max(1, fix)))
	}
	return out
}

// BlindSpots are the warnings about settings that keep Gunicorn's lines from gwrap (a file error
// log, a logging configuration, a custom logger class, a log level that hides the kill lines):
// part of Lint, and said on their own when the settings are learnt from a running master.
// (--log-syslog adds a handler and leaves stderr as it is, so it blinds nothing: Gunicorn's glogging.py, Logger.setup.)
func BlindSpots(s Settings) []Warning {
	var out []Warning
	add := func(code, msg, fix string) { out = append(out, Warning{code, msg, fix}) }
	if s.ErrorLog != "" && s.ErrorLog != "-" && s.ErrorLog != "/dev/stderr" && s.ErrorLog != "/dev/stdout" {
		msg := fmt.Sprintf("GWRAP IS BLIND: Gunicorn writes its error log to the file %s, not to stderr, so gwrap never sees WORKER TIMEOUT or any kill line and can only infer kills from /proc and the cgroup", s.ErrorLog)
		if s.CaptureOutput {
			msg += "; --capture-output sends the app's own output there too"
		}
		add("errorlog_not_visible", msg, "--error-logfile - (GUNICORN_CMD_ARGS=\"--error-logfile -\"); read an old file with gwrap explain FILE")
	}
	if s.LogConfig != "" {
		add("logconfig", fmt.Sprintf("GWRAP MAY BE BLIND: a logging configuration (%s) may move or reformat Gunicorn's lines; gwrap matches the message texts on stdout and stderr, but lines sent to a file, a socket or syslog only are lost to it", s.LogConfig),
			"keep a StreamHandler (ext://sys.stderr) on the gunicorn.error logger in that configuration")
	}
	if s.LoggerClass != "" {
		add("logger_class", fmt.Sprintf("GWRAP MAY BE BLIND: a custom logger class (%s) decides where Gunicorn's lines go; gwrap sees them only on stdout or stderr", s.LoggerClass),
			"let the logger class keep Gunicorn's stream handler on stderr (subclass gunicorn.glogging.Logger)")
	}
	if s.Sources["loglevel"] == SourceUnknown {
		add("loglevel_unknown", "the config file computes --log-level and gwrap could not evaluate it: gwrap cannot tell whether a worker's normal exit shows in the log, so it judges a worker that vanished without a line from /proc and the cgroup alone (a stale heartbeat is a timeout, a fresh one no incident)",
			"set --log-level on the command line or in GUNICORN_CMD_ARGS, or let gwrap evaluate the config (--eval-config, a python that imports gunicorn)")
	}
	if lvl := strings.ToLower(s.LogLevel); lvl == "critical" {
		add("loglevel", "--log-level critical hides the SIGKILL and exit lines: gwrap still sees WORKER TIMEOUT but must infer the rest", "use --log-level info or warning")
	}

	return out
}
