package bench

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"slices"
	"strings"
)

// Chart geometry, in SVG user units. The height grows with the legend's
// rows and the X labels' slant, so nothing overlaps.
const (
	svgW                       = 520
	padL, padR                 = 64, 18
	plotH                      = 220
	strokeWidth, markerSize    = 2, 4.5
	titleSize, labelSize, tick = 14, 12, 11
	charWidth                  = 6.2 // rough width of one tick-size character
	legendRow                  = 16
	barGap                     = 0.2 // share of a group's width left empty
	slant                      = 30  // degrees of slanted X labels
	tickCount                  = 5
)

const plotW = svgW - padL - padR

// palette is a colour-blind-friendly set (Okabe–Ito), cycled per series.
var palette = []string{"#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#999999"}

func colour(i int) string { return palette[i%len(palette)] }

// dashes are line styles, cycled per series with a period prime to the
// palette's, so two series never share both colour and dash.
var dashes = []string{"", "6 3", "2 3", "8 3 2 3", "4 4"}

func dash(i int) string {
	d := dashes[(i/len(palette)+i)%len(dashes)]
	if d == "" {
		return ""
	}
	return fmt.Sprintf(` stroke-dasharray="%s"`, d)
}

// marker draws series i's marker (a distinct shape per series) at x, y.
func marker(b *strings.Builder, i int, x, y float64, title string) {
	c := colour(i)
	r := markerSize
	t := ""
	if title != "" {
		t = "<title>" + html.EscapeString(title) + "</title>"
	}
	switch i % 6 {
	case 0: // circle
		fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="%.1f" fill="%s">%s</circle>`, x, y, r*0.85, c, t)
	case 1: // square
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s">%s</rect>`, x-r*0.8, y-r*0.8, 1.6*r, 1.6*r, c, t)
	case 2: // triangle up
		fmt.Fprintf(b, `<polygon points="%.1f,%.1f %.1f,%.1f %.1f,%.1f" fill="%s">%s</polygon>`, x, y-r, x-r, y+r*0.8, x+r, y+r*0.8, c, t)
	case 3: // diamond
		fmt.Fprintf(b, `<polygon points="%.1f,%.1f %.1f,%.1f %.1f,%.1f %.1f,%.1f" fill="%s">%s</polygon>`, x, y-r*1.1, x+r, y, x, y+r*1.1, x-r, y, c, t)
	case 4: // triangle down, hollow
		fmt.Fprintf(b, `<polygon points="%.1f,%.1f %.1f,%.1f %.1f,%.1f" fill="#fff" stroke="%s" stroke-width="1.5">%s</polygon>`, x, y+r, x-r, y-r*0.8, x+r, y-r*0.8, c, t)
	default: // cross
		fmt.Fprintf(b, `<g stroke="%s" stroke-width="2"><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>%s</g>`,
			c, x-r, y-r, x+r, y+r, x-r, y+r, x+r, y-r, t)
	}
}

// niceTicks returns about n round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if hi <= lo {
		hi = lo + 1
	}
	step := math.Pow(10, math.Floor(math.Log10((hi-lo)/float64(n))))
	for _, m := range []float64{1, 2, 5, 10} {
		if (hi-lo)/(step*m) <= float64(n) {
			step *= m
			break
		}
	}
	first, last := math.Floor(lo/step), math.Ceil(hi/step)
	var t []float64
	for i := first; i <= last; i++ {
		t = append(t, i*step)
	}
	return t
}

// logTicks returns powers of ten from the one at or below lo to the one at
// or above hi, with 2× and 5× steps when that is at most two decades.
func logTicks(lo, hi float64) []float64 {
	e0, e1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if e1 <= e0 {
		e1 = e0 + 1
	}
	mults := []float64{1}
	if e1-e0 <= 2 {
		mults = []float64{1, 2, 5}
	}
	var t []float64
	for e := e0; e < e1; e++ {
		for _, m := range mults {
			t = append(t, m*math.Pow(10, e))
		}
	}
	return append(t, math.Pow(10, e1))
}

func fmtTick(v float64) string {
	av := math.Abs(v)
	switch {
	case av >= 1e6:
		return fmt.Sprintf("%gM", math.Round(v/1e4)/100)
	case av >= 1e3:
		return fmt.Sprintf("%gk", math.Round(v/10)/100)
	}
	return fmt.Sprintf("%g", math.Round(v*1e4)/1e4)
}

type svgBuf struct{ strings.Builder }

func (b *svgBuf) text(x, y float64, anchor string, size int, s string, extra string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d" %s>%s</text>`,
		x, y, anchor, size, extra, html.EscapeString(s))
}

// axis maps data values to plot coordinates along one axis.
type axis struct {
	lo, hi float64 // in the transformed space (log10 for log axes)
	log    bool
	ticks  []float64 // data values
}

func (a axis) pos(v float64) float64 { // 0..1
	if a.log {
		v = math.Log10(math.Max(v, 1e-300))
	}
	return (v - a.lo) / (a.hi - a.lo)
}

// newAxis fits an axis to values: from 0 (linear bars: zero is the base)
// or from the lowest value, to the highest, on round ticks; a percentage
// axis (pct) never runs past 100.
func newAxis(values []float64, log, fromZero, pct bool) axis {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range values {
		if log && v <= 0 {
			continue
		}
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	if math.IsInf(lo, 1) {
		lo, hi = 0, 1
		if log {
			lo, hi = 1, 10
		}
	}
	if log {
		if fromZero {
			// A bar starts at the axis: leave room below the smallest so
			// that it still has a height.
			lo /= 3
		}
		t := logTicks(lo, hi)
		return axis{lo: math.Log10(t[0]), hi: math.Log10(t[len(t)-1]), log: true, ticks: t}
	}
	if fromZero {
		lo, hi = math.Min(lo, 0), math.Max(hi, 0)
	} else if hi > lo {
		// A little room around the data, but never across zero: a share
		// or a count does not go negative.
		pad := (hi - lo) * 0.05
		nlo := lo - pad
		if lo >= 0 && nlo < 0 {
			nlo = 0
		}
		nhi := hi + pad
		if pct && hi <= 100 && nhi > 100 {
			nhi = 100
		}
		lo, hi = nlo, nhi
	}
	if hi <= lo {
		hi = lo + 1
	}
	t := niceTicks(lo, hi, tickCount)
	if pct && hi <= 100 {
		t = slices.DeleteFunc(t, func(v float64) bool { return v > 100 })
		if t[len(t)-1] < hi {
			t = append(t, 100)
		}
	}
	return axis{lo: t[0], hi: t[len(t)-1], ticks: t}
}

// isPct reports whether c's Y axis is a percentage.
func isPct(c Chart) bool { return strings.Contains(c.YLabel, "%") }

// visible reports whether a series draws anything: some point above zero
// (or non-zero on a linear line chart).
func visible(c Chart, s Series) bool {
	for _, p := range s.Points {
		if c.Kind == LineChart && !c.LogY || p.Y > 0 {
			return true
		}
	}
	return false
}

// layout is a chart's vertical geometry.
type layout struct {
	legend []legendItem
	padT   float64
	padB   float64
	height float64
}

type legendItem struct {
	i    int // series index: colour, dash and marker
	name string
	x, y float64
}

// plan places the legend (wrapping rows, leaving out series that draw
// nothing) and leaves room below the plot for labels of labelH height.
func plan(c Chart, labelH float64) layout {
	var l layout
	x, y := float64(padL), 40.0
	for i, s := range c.Series {
		if !visible(c, s) {
			continue
		}
		w := 30 + charWidth*float64(len([]rune(s.Name))) + 14
		if x+w > svgW-padR && x > padL {
			x, y = padL, y+legendRow
		}
		l.legend = append(l.legend, legendItem{i: i, name: s.Name, x: x, y: y})
		x += w
	}
	l.padT = y + 16
	l.padB = labelH + 30
	l.height = l.padT + plotH + l.padB
	return l
}

// frame draws the title, legend, Y axis with its ticks and the axes'
// titles, and returns the Y mapping.
func (b *svgBuf) frame(c Chart, l layout, ya axis, line bool) func(float64) float64 {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %.0f" width="%d" height="%.0f" font-family="sans-serif" role="img">`,
		svgW, l.height, svgW, l.height)
	fmt.Fprintf(b, `<rect width="%d" height="%.0f" fill="#fff"/>`, svgW, l.height)
	b.text(svgW/2, 20, "middle", titleSize, c.Title, `font-weight="bold"`)
	y := func(v float64) float64 { return l.padT + plotH - ya.pos(v)*plotH }
	for _, t := range ya.ticks {
		fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e4e4e4"/>`, padL, padL+plotW, y(t), y(t))
		b.text(padL-6, y(t)+4, "end", tick, fmtTick(t), "")
	}
	base := l.padT + plotH
	fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333"/>`, padL, padL+plotW, base, base)
	fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#333"/>`, padL, padL, l.padT, base)
	b.text(padL+plotW/2, l.height-8, "middle", labelSize, c.XLabel, "")
	mid := l.padT + plotH/2
	b.text(16, mid, "middle", labelSize, c.YLabel, fmt.Sprintf(`transform="rotate(-90 16 %.1f)"`, mid))
	for _, it := range l.legend {
		if line {
			fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="%d"%s/>`,
				it.x, it.x+24, it.y-4, it.y-4, colour(it.i), strokeWidth, dash(it.i))
			marker(&b.Builder, it.i, it.x+12, it.y-4, "")
		} else {
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="12" height="12" fill="%s"/>`, it.x+6, it.y-10, colour(it.i))
		}
		b.text(it.x+30, it.y, "start", tick, it.name, "")
	}
	return y
}

// renderSVG draws c as an inline SVG element.
func renderSVG(c Chart) template.HTML {
	if c.Kind == BarChart {
		return barSVG(c)
	}
	return lineSVG(c)
}

func lineSVG(c Chart) template.HTML {
	var xs, ys []float64
	for _, s := range c.Series {
		for _, p := range s.Points {
			xs, ys = append(xs, p.X), append(ys, p.Y)
		}
	}
	var b svgBuf
	l := plan(c, 14)
	ya := newAxis(ys, c.LogY, false, isPct(c))
	y := b.frame(c, l, ya, true)
	// X: a log axis ticks at the sizes measured, so it spans the data
	// (4096 to 131072, not 1000 to 1M); a linear one on round values.
	xa := newAxis(xs, c.LogX, false, false)
	if c.LogX && len(xs) > 0 {
		t := slices.Clone(xs)
		slices.Sort(t)
		t = slices.Compact(t)
		lo, hi := math.Log10(t[0]), math.Log10(t[len(t)-1])
		if hi <= lo {
			lo, hi = lo-0.5, hi+0.5
		}
		pad := (hi - lo) * 0.04
		xa = axis{lo: lo - pad, hi: hi + pad, log: true, ticks: thinTicks(t)}
	}
	x := func(v float64) float64 { return padL + xa.pos(v)*plotW }
	for _, t := range xa.ticks {
		lbl := fmtTick(t)
		if c.LogX && t == math.Trunc(t) && t < 1e7 {
			lbl = fmt.Sprintf("%.0f", t) // a size measured: exactly
		}
		b.text(x(t), l.padT+plotH+16, "middle", tick, lbl, "")
	}
	for i, s := range c.Series {
		var pts []string
		for _, p := range s.Points {
			if c.LogY && p.Y <= 0 {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.X), y(p.Y)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="%d"%s points="%s"/>`, colour(i), strokeWidth, dash(i), strings.Join(pts, " "))
		if len(s.Points) <= 40 {
			for _, p := range s.Points {
				if c.LogY && p.Y <= 0 {
					continue
				}
				marker(&b.Builder, i, x(p.X), y(p.Y), fmt.Sprintf("%s: %s = %s", s.Name, fmtTick(p.X), fmtTick(p.Y)))
			}
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every text in it went through html.EscapeString
}

// thinTicks keeps sorted log-axis ticks that are at least a tenth of a
// decade apart, so their labels do not overlap.
func thinTicks(t []float64) []float64 {
	var out []float64
	for _, v := range t {
		if len(out) == 0 || math.Log10(v)-math.Log10(out[len(out)-1]) >= 0.12 {
			out = append(out, v)
		}
	}
	return out
}

func barSVG(c Chart) template.HTML {
	// Groups are the distinct point labels, in first-seen order; only
	// series that draw something get a slot.
	var groups []string
	seen := map[string]int{}
	var ys []float64
	var shown []int
	for i, s := range c.Series {
		if !visible(c, s) {
			continue
		}
		shown = append(shown, i)
		for _, p := range s.Points {
			ys = append(ys, p.Y)
		}
	}
	for _, s := range c.Series {
		for _, p := range s.Points {
			if _, ok := seen[p.Label]; !ok {
				seen[p.Label] = len(groups)
				groups = append(groups, p.Label)
			}
		}
	}
	gw := float64(plotW) / float64(max(len(groups), 1))
	longest := 0
	for _, name := range groups {
		longest = max(longest, len([]rune(name)))
	}
	labelW := charWidth * float64(longest)
	slanted := labelW > gw-4
	labelH := 14.0
	if slanted {
		labelH = labelW*math.Sin(slant*math.Pi/180) + 14
	}
	var b svgBuf
	l := plan(c, labelH)
	ya := newAxis(ys, c.LogY, true, isPct(c))
	y := b.frame(c, l, ya, false)
	base := l.padT + plotH
	for g, name := range groups {
		x := padL + gw*(float64(g)+0.5)
		if !slanted {
			b.text(x, base+16, "middle", tick, name, "")
			continue
		}
		ly := base + 14
		b.text(x, ly, "end", tick, name, fmt.Sprintf(`transform="rotate(-%d %.1f %.1f)"`, slant, x, ly))
	}
	zero := base
	if !c.LogY {
		zero = y(0)
	}
	bw := gw * (1 - barGap) / float64(max(len(shown), 1))
	for slot, i := range shown {
		s := c.Series[i]
		for _, p := range s.Points {
			x0 := padL + gw*float64(seen[p.Label]) + gw*barGap/2 + bw*float64(slot)
			title := fmt.Sprintf(`<title>%s %s: %s</title>`, html.EscapeString(s.Name), html.EscapeString(p.Label), fmtTick(p.Y))
			if c.LogY && p.Y <= 0 || !c.LogY && p.Y == 0 {
				// Nothing to draw: a zero mark on the base says so.
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="9" fill="%s">0%s</text>`, x0+bw/2, zero-3, colour(i), title)
				continue
			}
			top, bottom := y(p.Y), base
			if !c.LogY {
				top, bottom = y(math.Max(p.Y, 0)), y(math.Min(p.Y, 0))
			}
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s">%s</rect>`,
				x0, top, bw, math.Max(bottom-top, 1), colour(i), title)
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every text in it went through html.EscapeString
}
