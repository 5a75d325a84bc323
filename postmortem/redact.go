package postmortem

import (
	"regexp"
	"strings"
)

// Secrets never reach a report: values of password/secret/token/key-like options and fields, the
// password part of credentials in URLs, bearer tokens, and the signature parameters of signed
// URLs (Azure SAS sig=, Functions code=, also as dict keys "sig": …) and session cookies
// (sessionid=…) are replaced. Redaction errs on the side of hiding: a
// name that merely looks like a secret loses its value too.
var (
	secretName = `[a-z0-9_-]*(?:password|passwd|pwd|secret|token|apikey|api_key|api-key|credential|auth|key|private)[a-z0-9_-]*`
	secretFlag = regexp.MustCompile(`(?i)^--?` + secretName + `$`)
	// name=value, name: value, "name": "value", 'name': 'value'
	secretKV      = regexp.MustCompile(`(?i)\b(` + secretName + `)(["']?\s*(?:=|:)\s*)("[^"]*"|'[^']*'|[^\s&,;'"]+)`)
	urlCreds      = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^/\s@]+@`)
	bearer        = regexp.MustCompile(`(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}`)
	exceptionName = regexp.MustCompile(`(Error|Exception|Warning|Exit|Interrupt)$`)
	signedQuery   = regexp.MustCompile(`(?i)([?&](?:sig|signature|code|x-amz-signature|x-goog-signature)=)[^&\s"']+`)
	// Exact names whose value is a secret but too short or too common to be matched as a part
	// of a longer name (secretName would hide "signal: 9"): a signed URL's sig/signature given as
	// a dict or a bare pair, and session cookies (Django's sessionid, Flask's session, PHP, Java,
	// Express).
	exactKV = regexp.MustCompile(`(?i)(^|[^a-z0-9_.-])(sig|signature|sessionid|session_id|session|sid|jsessionid|phpsessid|connect\.sid)(["']?\s*(?:=|:)\s*)("[^"]*"|'[^']*'|[^\s&,;'"]+)`)
)

const hidden = "[REDACTED]"

// RedactArgs hides secrets in a command line: `--db-password x`, `--token=x`, `--env KEY=x`,
// URL credentials.
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

// redact hides secrets in free text (a log line, a traceback line, an argument).
func redact(s string) string {
	if s == "" {
		return s
	}
	s = urlCreds.ReplaceAllString(s, "$1:"+hidden+"@")
	s = signedQuery.ReplaceAllString(s, "${1}"+hidden)
	s = bearer.ReplaceAllString(s, "$1 "+hidden)
	s = exactKV.ReplaceAllStringFunc(s, func(m string) string {
		sub := exactKV.FindStringSubmatch(m)
		if strings.HasPrefix(sub[4], hidden) {
			return m
		}
		return sub[1] + sub[2] + sub[3] + hidden
	})
	return secretKV.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretKV.FindStringSubmatch(m)
		if strings.HasPrefix(sub[3], hidden) || exceptionName.MatchString(sub[1]) {
			return m // already hidden; "KeyError: 'user_id'" is an exception, not a key
		}
		return sub[1] + sub[2] + hidden
	})
}

func redactAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = redact(s)
	}
	return out
}

// Redact hides secrets in one line (what reports quote of Gunicorn's output).
func Redact(s string) string { return redact(s) }

// RedactAll is Redact for every line.
func RedactAll(ss []string) []string { return redactAll(ss) }
