package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/gwrap/gwrap/gunicorn"
	"github.com/gwrap/gwrap/postmortem"
)

// runExplain is `gwrap explain [--json] LOGFILE|-`.
func runExplain(args []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("gwrap explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print one JSON object with an incidents array")
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: gwrap explain [--json] LOGFILE|-") }
	if err := fs.Parse(interleave(args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2, fmt.Errorf("%w: explain takes exactly one LOGFILE or -", errUsage)
	}
	r := stdin
	if name := fs.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return 1, fmt.Errorf("explain: %w", err)
		}
		defer f.Close()
		r = f
	}
	ex, err := gunicorn.Explain(r)
	if err != nil {
		return 1, fmt.Errorf("explain: %w", err)
	}
	if *asJSON {
		err = ex.WriteJSON(stdout)
	} else {
		err = ex.WriteText(stdout)
	}
	if err != nil {
		return 1, fmt.Errorf("explain: %w", err)
	}
	return 0, nil
}

// runReport is `gwrap report list|show ID|latest [--report-dir DIR] [--json]`.
func runReport(args []string, env func(string) (string, bool), stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("gwrap report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir, _ := env(envPrefix + "REPORT_DIR")
	fs.StringVar(&dir, "report-dir", dir, "where the reports are")
	asJSON := fs.Bool("json", false, "print JSON")
	usage := "usage: gwrap report list|show ID|latest [--report-dir DIR] [--json]"
	fs.Usage = func() { fmt.Fprintln(stderr, usage) }
	if err := fs.Parse(interleave(args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, fmt.Errorf("%w: %v", errUsage, err)
	}
	if dir == "" {
		dir = postmortem.DefaultDir(fileExists)
	}
	store := postmortem.NewStore(dir, postmortem.Retention{})
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return 2, fmt.Errorf("%w: report needs list, show ID or latest", errUsage)
	}
	switch {
	case rest[0] == "list" && len(rest) == 1:
		list, err := store.List()
		if err != nil {
			return 1, fmt.Errorf("report list: %w", err)
		}
		if *asJSON {
			return 0, writeJSON(stdout, list)
		}
		return 0, postmortem.WriteList(stdout, list)
	case (rest[0] == "show" && len(rest) == 2) || (rest[0] == "latest" && len(rest) == 1):
		var r postmortem.Report
		var err error
		if rest[0] == "latest" {
			r, err = store.Latest()
		} else {
			r, err = store.Get(rest[1])
		}
		if err != nil {
			return 1, fmt.Errorf("report %s: %w", rest[0], err)
		}
		if *asJSON {
			return 0, writeJSON(stdout, r)
		}
		return 0, postmortem.WriteText(stdout, r)
	}
	fs.Usage()
	return 2, fmt.Errorf("%w: unknown report command %q", errUsage, rest)
}

// interleave moves flags after positional arguments to the front, so that `explain log --json`
// works as well as `explain --json log` (the flag package stops at the first positional).
func interleave(args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			pos = append(pos, args[i+1:]...)
			i = len(args)
		case len(a) > 1 && a[0] == '-':
			flags = append(flags, a)
			if (a == "--report-dir" || a == "-report-dir") && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
		default:
			pos = append(pos, a)
		}
	}
	return append(append(flags, "--"), pos...)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
