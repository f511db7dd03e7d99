module github.com/thermoscache/thermos/tiered/e2e

go 1.26.0

// The workspace (go.work at the repository root) uses the parent module;
// the replace keeps this module buildable with GOWORK=off too.
replace github.com/thermoscache/thermos => ../..

require github.com/anishathalye/porcupine v1.3.1
