module github.com/thermoscache/thermos/tiered/e2e

go 1.26.0

// The workspace (go.work at the repository root) uses the parent module;
// the replace keeps this module buildable with GOWORK=off too.
replace github.com/thermoscache/thermos => ../..

require (
	github.com/hashicorp/golang-lru/v2 v2.0.7
	github.com/maypok86/otter/v2 v2.4.0
	github.com/thermoscache/thermos v0.0.0-00010101000000-000000000000
)

require (
	github.com/redis/rueidis v1.0.79 // indirect
	golang.org/x/sys v0.48.0 // indirect
)
