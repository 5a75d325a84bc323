//go:build !gwrap_faults

package main

// fault is a seam for the tests that make a monitoring part panic (fault_on.go, built only
// with -tags gwrap_faults): in gwrap as shipped it does nothing, and there is no switch.
func fault(part) {}
