package postmortem

import (
	"regexp"
	"strings"
)

// Secrets never reach a report: values of password/secret/token/key-like options and the
// password part of credentials in URLs are replaced.
var (
	secretFlag = regexp.MustCompile(`(?i)^--?[a-z0-9_-]*(password|passwd|pwd|secret|token|apikey|api-key|api_key|credential|auth|private-key|keyfile)[a-z0-9_-]*$`)
	secretKV   = regexp.MustCompile(`(?i)\b([a-z0-9_-]*(?:password|passwd|pwd|secret|token|apikey|api_key|credential)[a-z0-9_-]*)(=|: ?)("[^"]*"|'[^']*'|[^\s&,;]+)`)
	urlCreds   = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+):[^/\s@]+@`)
)

const hidden = "[REDACTED]"

// RedactArgs hides secrets in a command line: `--db-password x`, `--token=x`, URL credentials.
func RedactArgs(args []string) []string {
	out := make([]string, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, _, hasVal := strings.Cut(a, "=")
		switch {
		case secretFlag.MatchString(name) && hasVal:
			out[i] = name + "=" + hidden
		case secretFlag.MatchString(a) && i+1 < len(args):
			out[i] = a
			i++
			out[i] = hidden
		default:
			out[i] = redact(a)
		}
	}
	return out
}

// redact hides secrets in free text (a log line, a traceback line).
func redact(s string) string {
	if s == "" {
		return s
	}
	s = urlCreds.ReplaceAllString(s, "$1:"+hidden+"@")
	return secretKV.ReplaceAllString(s, "$1$2"+hidden)
}

func redactAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = redact(s)
	}
	return out
}
