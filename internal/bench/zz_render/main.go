package main

import (
	"encoding/json"
	"os"
	"strings"

	"github.com/thermoscache/thermos/internal/bench"
)

func main() {
	b, _ := os.ReadFile(os.Args[1])
	var r bench.Results
	if err := json.Unmarshal(b, &r); err != nil {
		panic(err)
	}
	if len(os.Args) > 3 {
		var keep []*bench.Section
		for _, s := range r.Sections {
			if strings.Contains(os.Args[3], s.Scenario) {
				keep = append(keep, s)
			}
		}
		r.Sections = keep
	}
	f, _ := os.Create(os.Args[2])
	defer f.Close()
	if err := r.WriteHTML(f); err != nil {
		panic(err)
	}
}
