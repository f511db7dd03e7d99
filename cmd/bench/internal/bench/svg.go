package bench

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strings"
)

// Chart geometry, in SVG user units.
const (
	svgW, svgH                 = 540, 330
	padL, padR, padT, padB     = 62, 16, 52, 64
	plotW, plotH               = svgW - padL - padR, svgH - padT - padB
	legendY                    = 38
	tickCount                  = 5
	barGap                     = 0.2 // share of a group's width left empty
	strokeWidth, markerRadius  = 2, 3
	titleSize, labelSize, tick = 14, 12, 11
	charWidth                  = 6.5 // rough width of one tick-size character
)

// palette is a colour-blind-friendly set (Okabe–Ito), cycled per series.
const palette = "#0072B2 #E69F00 #009E73 #D55E00 #CC79A7 #56B4E9 #F0E442 #000000"

func colour(i int) string {
	p := strings.Fields(palette)
	return p[i%len(p)]
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

func fmtTick(v float64) string {
	av := math.Abs(v)
	switch {
	case av >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case av >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
	}
	return fmt.Sprintf("%g", math.Round(v*1e6)/1e6)
}

type svgBuf struct{ strings.Builder }

func (b *svgBuf) text(x, y float64, anchor string, size int, s string, extra string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d" %s>%s</text>`,
		x, y, anchor, size, extra, html.EscapeString(s))
}

// frame draws the title, axes, Y ticks and labels, and returns the Y mapping.
func (b *svgBuf) frame(c Chart, ylo, yhi float64) func(float64) float64 {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="%d" height="%d" font-family="sans-serif" role="img">`,
		svgW, svgH, svgW, svgH)
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="#fff"/>`, svgW, svgH)
	b.text(svgW/2, 20, "middle", titleSize, c.Title, `font-weight="bold"`)
	ticks := niceTicks(ylo, yhi, tickCount)
	ylo, yhi = ticks[0], ticks[len(ticks)-1]
	y := func(v float64) float64 { return padT + plotH - (v-ylo)/(yhi-ylo)*plotH }
	for _, t := range ticks {
		fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, padL, padL+plotW, y(t), y(t))
		b.text(padL-6, y(t)+4, "end", tick, fmtTick(t), "")
	}
	fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>`, padL, padL+plotW, padT+plotH, padT+plotH)
	fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="#333"/>`, padL, padL, padT, padT+plotH)
	b.text(padL+plotW/2, svgH-8, "middle", labelSize, c.XLabel, "")
	b.text(16, padT+plotH/2, "middle", labelSize, c.YLabel, fmt.Sprintf(`transform="rotate(-90 16 %d)"`, padT+plotH/2))
	lx := float64(padL)
	for i, s := range c.Series {
		fmt.Fprintf(b, `<rect x="%.1f" y="%d" width="12" height="12" fill="%s"/>`, lx, legendY-10, colour(i))
		b.text(lx+16, legendY, "start", tick, s.Name, "")
		lx += 16 + charWidth*float64(len([]rune(s.Name))) + 14
	}
	return y
}

// yRange returns the Y axis span: from 0 (or the lowest negative value) to
// the highest value.
func yRange(c Chart) (lo, hi float64) {
	hi = math.Inf(-1)
	for _, s := range c.Series {
		for _, p := range s.Points {
			lo, hi = math.Min(lo, p.Y), math.Max(hi, p.Y)
		}
	}
	if math.IsInf(hi, -1) || hi <= lo {
		hi = lo + 1
	}
	return lo, hi
}

// renderSVG draws c as an inline SVG element.
func renderSVG(c Chart) template.HTML {
	if c.Kind == BarChart {
		return barSVG(c)
	}
	return lineSVG(c)
}

func lineSVG(c Chart) template.HTML {
	var b svgBuf
	ylo, yhi := yRange(c)
	y := b.frame(c, ylo, yhi)
	fx := func(v float64) float64 { return v }
	if c.LogX {
		fx = func(v float64) float64 { return math.Log10(math.Max(v, 1e-12)) }
	}
	xlo, xhi := math.Inf(1), math.Inf(-1)
	for _, s := range c.Series {
		for _, p := range s.Points {
			xlo, xhi = math.Min(xlo, fx(p.X)), math.Max(xhi, fx(p.X))
		}
	}
	if math.IsInf(xlo, 1) {
		xlo, xhi = 0, 1
	}
	var xt []float64
	if c.LogX {
		for e := math.Floor(xlo); e <= math.Ceil(xhi); e++ {
			xt = append(xt, e)
		}
	} else {
		xt = niceTicks(xlo, xhi, tickCount)
	}
	xlo, xhi = math.Min(xlo, xt[0]), math.Max(xhi, xt[len(xt)-1])
	if xhi <= xlo {
		xhi = xlo + 1
	}
	x := func(v float64) float64 { return padL + (fx(v)-xlo)/(xhi-xlo)*plotW }
	for _, t := range xt {
		v, lbl := t, fmtTick(t)
		if c.LogX {
			v, lbl = math.Pow(10, t), fmtTick(math.Pow(10, t))
		}
		b.text(x(v), padT+plotH+16, "middle", tick, lbl, "")
	}
	for i, s := range c.Series {
		var pts []string
		for _, p := range s.Points {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(p.X), y(p.Y)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="%d" points="%s"/>`, colour(i), strokeWidth, strings.Join(pts, " "))
		if len(s.Points) <= 40 {
			for _, p := range s.Points {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="%d" fill="%s"><title>%s: %s = %s</title></circle>`,
					x(p.X), y(p.Y), markerRadius, colour(i), html.EscapeString(s.Name), fmtTick(p.X), fmtTick(p.Y))
			}
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every text in it went through html.EscapeString
}

func barSVG(c Chart) template.HTML {
	var b svgBuf
	ylo, yhi := yRange(c)
	y := b.frame(c, ylo, yhi)
	// Groups are the distinct point labels, in first-seen order.
	var groups []string
	seen := map[string]int{}
	for _, s := range c.Series {
		for _, p := range s.Points {
			if _, ok := seen[p.Label]; !ok {
				seen[p.Label] = len(groups)
				groups = append(groups, p.Label)
			}
		}
	}
	if len(groups) == 0 {
		b.WriteString(`</svg>`)
		return template.HTML(b.String())
	}
	gw := float64(plotW) / float64(len(groups))
	bw := gw * (1 - barGap) / float64(len(c.Series))
	longest := 0
	for _, name := range groups {
		longest = max(longest, len([]rune(name)))
	}
	for g, name := range groups {
		x := padL + gw*(float64(g)+0.5)
		if charWidth*float64(longest) < gw {
			b.text(x, padT+plotH+16, "middle", tick, name, "")
			continue
		}
		// Too long to sit side by side: slant them.
		y := float64(padT + plotH + 14)
		b.text(x, y, "end", tick, name, fmt.Sprintf(`transform="rotate(-20 %.1f %.1f)"`, x, y))
	}
	for i, s := range c.Series {
		for _, p := range s.Points {
			x0 := padL + gw*float64(seen[p.Label]) + gw*barGap/2 + bw*float64(i)
			top, base := y(math.Max(p.Y, 0)), y(math.Min(p.Y, 0))
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`,
				x0, top, bw, math.Max(base-top, 0.5), colour(i), html.EscapeString(s.Name), html.EscapeString(p.Label), fmtTick(p.Y))
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every text in it went through html.EscapeString
}
