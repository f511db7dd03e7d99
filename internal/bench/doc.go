// Package bench holds the benchmark tool's workloads, scenarios and reports;
// cmd/bench only parses flags and calls Run.
package bench
