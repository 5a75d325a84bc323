package main

import "github.com/gwrap/gwrap/postmortem"

// redactArgs hides secrets in a command line before it is printed.
func redactArgs(args []string) []string { return postmortem.RedactArgs(args) }
