package bench

import (
	"html/template"
	"io"
)

// reportPage is the self-contained HTML report: inline CSS and SVG, no
// scripts, no network.
const reportPage = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>thermos benchmark — {{.R.Started.Format "2006-01-02 15:04"}}</title>
<style>
body{font-family:sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
h3{font-size:14px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:12px;margin-bottom:12px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:13px;margin:4px 0}.meta{color:#555;font-size:13px}
.charts{display:flex;flex-wrap:wrap;gap:12px}svg{border:1px solid #eee;max-width:100%;height:auto}
</style></head><body>
<h1>thermos benchmark</h1>
<p class="meta">{{.R.Started.Format "2006-01-02 15:04:05 MST"}} · {{.R.Host.GOOS}}/{{.R.Host.GOARCH}} · {{.R.Host.CPUs}} CPUs · {{.R.Host.GoVersion}} · Redis: {{.R.Host.Redis}} · took {{.R.Duration}}</p>
{{range .Sections}}<h2>{{.S.Title}}</h2>
{{range .S.Notes}}<p class="note">{{.}}</p>{{end}}
<div class="charts">{{range .SVG}}{{.}}{{end}}</div>
{{range .S.Tables}}<h3>{{.Title}}</h3><table><tr>{{range .Columns}}<th>{{.}}</th>{{end}}</tr>
{{range .Rows}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>{{end}}
{{end}}</body></html>
`

// WriteHTML writes the report page for r to w.
func (r *Results) WriteHTML(w io.Writer) error {
	t, err := template.New("report").Parse(reportPage)
	if err != nil {
		return err
	}
	type section struct {
		S   *Section
		SVG []template.HTML
	}
	data := struct {
		R        *Results
		Sections []section
	}{R: r}
	for _, s := range r.Sections {
		sec := section{S: s}
		for _, c := range s.Charts {
			sec.SVG = append(sec.SVG, renderSVG(c))
		}
		data.Sections = append(data.Sections, sec)
	}
	return t.Execute(w, data)
}
