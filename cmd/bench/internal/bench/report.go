package bench

import (
	"fmt"
	"html/template"
	"io"
)

// reportPage is the self-contained HTML report: inline CSS and SVG, no
// scripts, no network. A contents list leads to every section and table;
// each table has the charts drawn from it beside it.
const reportPage = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>thermos benchmark — {{.R.Started.Format "2006-01-02 15:04"}}</title>
<style>
body{font-family:sans-serif;margin:24px auto;max-width:1800px;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
h3{font-size:14px;margin:0 0 6px}
table{border-collapse:collapse;font-size:12px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:13px;margin:4px 0;max-width:1100px}.meta{color:#555;font-size:13px}
.warn{background:#fff3cd;border:1px solid #e0c36a;padding:4px 8px;font-size:13px;margin:4px 0;max-width:1100px}
.pair{display:flex;flex-wrap:wrap;align-items:flex-start;gap:16px;margin:18px 0}
.pair .tbl{overflow-x:auto;max-width:100%}
.charts{display:flex;flex-wrap:wrap;gap:12px}svg{border:1px solid #eee;max-width:100%;height:auto}
nav{font-size:13px;columns:2;max-width:1100px}nav ul{margin:4px 0}nav li{break-inside:avoid}
</style></head><body>
<h1>thermos benchmark</h1>
<p class="meta">{{.R.Started.Format "2006-01-02 15:04:05 MST"}} · {{.R.Host.GOOS}}/{{.R.Host.GOARCH}} · {{.R.Host.CPUs}} CPUs · {{.R.Host.GoVersion}} · Redis: {{.R.Host.Redis}} · took {{.R.Duration}}</p>
<nav><b>Contents</b><ul>{{range .Sections}}<li><a href="#{{.ID}}">{{.S.Title}}</a><ul>{{range .Pairs}}<li><a href="#{{.ID}}">{{.T.Title}}</a></li>{{end}}</ul></li>{{end}}</ul></nav>
{{range .Sections}}<h2 id="{{.ID}}">{{.S.Title}}</h2>
{{range .S.Warnings}}<p class="warn">⚠ {{.}}</p>{{end}}
{{range .S.Notes}}<p class="note">{{.}}</p>{{end}}
{{range .Pairs}}<div class="pair" id="{{.ID}}"><div class="tbl"><h3>{{.T.Title}}</h3><table><tr>{{range .T.Columns}}<th>{{.}}</th>{{end}}</tr>
{{range .T.Rows}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table></div>{{if .SVG}}<div class="charts">{{range .SVG}}{{.}}{{end}}</div>{{end}}</div>
{{end}}{{end}}</body></html>
`

// WriteHTML writes the report page for r to w.
func (r *Results) WriteHTML(w io.Writer) error {
	t, err := template.New("report").Parse(reportPage)
	if err != nil {
		return err
	}
	type pair struct {
		ID  string
		T   Table
		SVG []template.HTML
	}
	type section struct {
		ID    string
		S     *Section
		Pairs []pair
	}
	data := struct {
		R        *Results
		Sections []section
	}{R: r}
	for i, s := range r.Sections {
		sec := section{ID: fmt.Sprintf("s%d-%s", i, s.Scenario), S: s}
		for j, tb := range s.Tables {
			sec.Pairs = append(sec.Pairs, pair{ID: fmt.Sprintf("s%d-t%d", i, j), T: tb})
		}
		for _, c := range s.Charts {
			j := c.Table
			if j < 0 || j >= len(sec.Pairs) {
				j = len(sec.Pairs) - 1 // a chart of no table goes with the last
			}
			if j < 0 {
				sec.Pairs = append(sec.Pairs, pair{ID: fmt.Sprintf("s%d-t0", i)})
				j = 0
			}
			sec.Pairs[j].SVG = append(sec.Pairs[j].SVG, renderSVG(c))
		}
		data.Sections = append(data.Sections, sec)
	}
	return t.Execute(w, data)
}
