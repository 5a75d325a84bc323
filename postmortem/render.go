package postmortem

import (
	"bufio"
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
	"time"
)

// WriteText prints a report for people (gwrap report show/latest).
func WriteText(w io.Writer, r Report) error {
	b := bufio.NewWriter(w)
	v, inc := r.Verdict, r.Incident
	fmt.Fprintf(b, "Report %s\n", r.ID)
	fmt.Fprintf(b, "%s, %s at %s\n\n", subject(inc), inc.Kind, inc.At.UTC().Format(time.RFC3339))
	fmt.Fprintf(b, "Cause: %s (confidence %s)\n", v.Cause, v.Confidence)
	fmt.Fprintf(b, "Near the memory limit: %s. Ran long: %s.\n\n", yesNo(v.NearMemoryLimit), yesNo(v.RanLong))
	fmt.Fprintf(b, "%s\n", v.Summary)
	if len(v.Evidence) > 0 {
		fmt.Fprintf(b, "\nEvidence:\n")
		for _, f := range v.Evidence {
			fmt.Fprintf(b, "  - %s: %s", f.Fact, f.Value)
			if f.Threshold != "" {
				fmt.Fprintf(b, " (%s)", f.Threshold)
			}
			fmt.Fprintln(b)
		}
	}
	if len(v.Missing) > 0 {
		fmt.Fprintf(b, "\nMissing evidence: %s\n", strings.Join(v.Missing, "; "))
	}
	if len(v.Advice) > 0 {
		fmt.Fprintf(b, "\nAdvice:\n")
		for _, a := range v.Advice {
			fmt.Fprintf(b, "  - %s\n", a)
		}
	}
	if g := r.Gunicorn; g.Timeout > 0 || g.WorkerClass != "" {
		fmt.Fprintf(b, "\nGunicorn %s: timeout %d s, workers %d, class %s\n", or(g.Version, "(version unknown)"), g.Timeout, g.Workers, g.WorkerClass)
	}
	if h := r.Host; h.Hostname != "" || h.GwrapVersion != "" {
		fmt.Fprintf(b, "Host %s, gwrap %s\n", or(h.Hostname, "unknown"), or(h.GwrapVersion, "unknown"))
	}
	if len(inc.Lines) > 0 {
		fmt.Fprintf(b, "\nGunicorn said:\n")
		for _, l := range inc.Lines {
			fmt.Fprintf(b, "  | %s\n", l)
		}
	}
	if len(inc.Requests) > 0 {
		fmt.Fprintf(b, "\nRequests in flight when it died:\n")
		for _, r := range inc.Requests {
			fmt.Fprintf(b, "  - %s\n", r.Running())
		}
	}
	if len(inc.PythonStack) > 0 {
		fmt.Fprintf(b, "\nPython stack")
		if inc.StackThread != "" {
			fmt.Fprintf(b, " (thread %s)", inc.StackThread)
		}
		fmt.Fprintf(b, ", innermost last:\n")
		for _, l := range inc.PythonStack {
			fmt.Fprintf(b, "  %s\n", l)
		}
	}
	if len(inc.Traceback) > 0 {
		fmt.Fprintf(b, "\nTraceback:\n")
		for _, l := range inc.Traceback {
			fmt.Fprintf(b, "  %s\n", l)
		}
	}
	return b.Flush()
}

func or(s, dflt string) string {
	if s == "" {
		return dflt
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// WriteList prints one line per report.
func WriteList(w io.Writer, l []Summary) error {
	b := bufio.NewWriter(w)
	if len(l) == 0 {
		fmt.Fprintln(b, "no reports")
	}
	for _, s := range l {
		fmt.Fprintf(b, "%s  pid %-7d %-9s %-16s %s\n", s.ID, s.PID, s.Kind, s.Cause, s.Summary)
	}
	return b.Flush()
}

// series is one line of a chart.
type series struct {
	Name  string
	Color string
	Y     []float64 // NaN = no value
	Dash  bool
}

// chart is an inline SVG line chart over the report's timeline.
type chart struct {
	Title string
	Unit  string
	X     []time.Time
	Lines []series
	Mark  time.Time // the incident, drawn as a vertical line; zero = none
	Floor float64   // the y axis reaches at least this (100 for CPU percent)
}

const chartW, chartH, padL, padR, padB, padT = 720.0, 210.0, 56.0, 12.0, 26.0, 30.0

// niceMax rounds v up to a value whose quarters read well (1, 1.2, 1.6, 2, 2.4, 3.2, 4, 5, 6 or
// 8 times a power of ten), for a grid of four steps.
func niceMax(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.2, 1.6, 2, 2.4, 3.2, 4, 5, 6, 8, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// SVG renders the chart: a legend row, a grid with labelled steps, the time span, the incident
// marker and one polyline per series.
func (c chart) SVG() template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img" aria-label="%s">`, chartW, chartH, chartW, chartH, template.HTMLEscapeString(c.Title))
	ymax := 0.0
	for _, s := range c.Lines {
		for _, y := range s.Y {
			if !math.IsNaN(y) && y > ymax {
				ymax = y
			}
		}
	}
	if ymax <= c.Floor {
		ymax = c.Floor
	} else {
		ymax = niceMax(ymax * 1.05)
	}
	x0, x1 := time.Time{}, time.Time{}
	if len(c.X) > 0 {
		x0, x1 = c.X[0], c.X[len(c.X)-1]
	}
	if !c.Mark.IsZero() && len(c.X) > 0 && c.Mark.After(x1) {
		x1 = c.Mark
	}
	span := x1.Sub(x0).Seconds()
	if span <= 0 {
		span = 1
	}
	px := func(t time.Time) float64 { return padL + (chartW-padL-padR)*t.Sub(x0).Seconds()/span }
	py := func(y float64) float64 { return chartH - padB - (chartH-padB-padT)*y/ymax }
	for k := 0; k <= 4; k++ {
		y := ymax * float64(k) / 4
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="%s"/>`, padL, py(y), chartW-padR, py(y), map[bool]string{true: "#888", false: "#e6e6e6"}[k == 0])
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" class="ax" text-anchor="end">%s</text>`, padL-6, py(y)+4, template.HTMLEscapeString(fmtNum(y)))
	}
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#888"/>`, padL, padT, padL, chartH-padB)
	if len(c.X) > 0 {
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="ax">%s</text>`, padL, chartH-8, x0.UTC().Format("15:04:05"))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" class="ax" text-anchor="end">%s (%.0f s)</text>`, chartW-padR, chartH-8, x1.UTC().Format("15:04:05"), span)
	}
	if !c.Mark.IsZero() && len(c.X) > 0 && !c.Mark.Before(x0) {
		x := px(c.Mark)
		fmt.Fprintf(&b, `<line class="mark" x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#444" stroke-dasharray="2 3"/>`, x, padT, x, chartH-padB)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" class="ax" text-anchor="end">incident</text>`, x-4, padT+12)
	}
	lx := padL
	for _, s := range c.Lines {
		dash := ""
		if s.Dash {
			dash = ` stroke-dasharray="6 4"`
		}
		// One polyline per run of known values: an unreadable value is a gap, not a zero.
		for _, run := range runs(s.Y, len(c.X)) {
			var pts []string
			for j := run[0]; j < run[1]; j++ {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(c.X[j]), py(s.Y[j])))
			}
			fmt.Fprintf(&b, `<polyline class="series" fill="none" stroke="%s" stroke-width="2"%s stroke-linejoin="round" points="%s"/>`, s.Color, dash, strings.Join(pts, " "))
		}
		fmt.Fprintf(&b, `<line x1="%.0f" y1="12" x2="%.0f" y2="12" stroke="%s" stroke-width="3"%s/>`, lx, lx+18, s.Color, dash)
		fmt.Fprintf(&b, `<text x="%.0f" y="16" class="lg">%s</text>`, lx+24, template.HTMLEscapeString(s.Name))
		lx += 24 + 7.5*float64(len(s.Name)) + 24
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// runs are the [start, end) index ranges of ys (up to n) without NaN.
func runs(ys []float64, n int) [][2]int {
	var out [][2]int
	start := -1
	for j := 0; j <= min(n, len(ys)); j++ {
		known := j < min(n, len(ys)) && !math.IsNaN(ys[j])
		switch {
		case known && start < 0:
			start = j
		case !known && start >= 0:
			out = append(out, [2]int{start, j})
			start = -1
		}
	}
	return out
}

func orNaN(p *float64) float64 {
	if p == nil {
		return math.NaN()
	}
	return *p
}

func mibOrNaN(p *uint64) float64 {
	if p == nil {
		return math.NaN()
	}
	return float64(*p) / (1 << 20)
}

func fmtNum(f float64) string {
	if f >= 10 || f == math.Trunc(f) {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%.1f", f)
}

// charts builds the report's three charts: memory against the limit, CPU, heartbeat age
// against the timeout.
func charts(r Report) []chart {
	var xs []time.Time
	var rss, cpu, runDelay, age, limit, timeout []float64
	lim := math.NaN()
	if r.Container.LimitBytes != nil {
		lim = float64(*r.Container.LimitBytes) / (1 << 20)
	}
	for _, p := range r.Timeline {
		xs = append(xs, p.T)
		rss = append(rss, mibOrNaN(p.RSSBytes))
		cpu = append(cpu, orNaN(p.CPUPercent))
		runDelay = append(runDelay, orNaN(p.RunDelayPct))
		a := orNaN(p.HeartbeatAge)
		if a < 0 { // reports written before unknown ages were null said -1
			a = math.NaN()
		}
		age = append(age, a)
		limit = append(limit, lim)
		timeout = append(timeout, float64(limitOf(r)))
	}
	// The container's working set, on the worker's time axis (nearest earlier sample); a gap
	// where that sample could not read it.
	ws := make([]float64, len(xs))
	for i, t := range xs {
		ws[i] = math.NaN()
		for _, c := range r.Container.Samples {
			if !c.T.After(t) {
				ws[i] = mibOrNaN(c.WorkingSetBytes)
			}
		}
	}
	mem := chart{Title: "Memory", Unit: "MiB", X: xs, Lines: []series{{Name: "worker RSS", Color: "#1f77b4", Y: rss}, {Name: "container working set", Color: "#9467bd", Y: ws}}}
	if !math.IsNaN(lim) {
		mem.Lines = append(mem.Lines, series{Name: "container limit", Color: "#d62728", Y: limit, Dash: true})
	}
	mark := r.Incident.At
	mem.Mark = mark
	cpuChart := chart{Title: "CPU", Unit: "% of one core", X: xs, Mark: mark, Floor: 100, Lines: []series{{Name: "worker CPU", Color: "#ff7f0e", Y: cpu}}}
	if anyValue(runDelay) {
		cpuChart.Lines = append(cpuChart.Lines, series{Name: "waiting for a CPU (run queue)", Color: "#8c564b", Y: runDelay})
	}
	return []chart{
		mem,
		cpuChart,
		{Title: "Heartbeat age", Unit: "s", X: xs, Mark: mark, Lines: []series{{Name: "silence (heartbeat age)", Color: "#2ca02c", Y: age}, {Name: "Gunicorn timeout", Color: "#d62728", Y: timeout, Dash: true}}},
	}
}

func anyValue(ys []float64) bool {
	for _, y := range ys {
		if y > 0 && !math.IsNaN(y) {
			return true
		}
	}
	return false
}

var page = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>gwrap post-mortem: worker {{.R.Incident.PID}} {{.R.Verdict.Cause}}</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:780px;color:#222;padding:0 1em}
h1{font-size:1.4em;margin-bottom:.2em} .cause{display:inline-block;padding:.15em .6em;border-radius:.3em;background:#fde2e1;color:#8a1c1c;font-weight:600}
.meta{color:#666} table{border-collapse:collapse;width:100%;margin:.5em 0} td,th{text-align:left;padding:.25em .5em;border-bottom:1px solid #eee;vertical-align:top}
.chart{display:block;width:100%;height:auto;margin:.4em 0 1.2em;background:#fcfcfc;border:1px solid #eee;border-radius:4px} .ax{font-size:11px;fill:#666} .lg{font-size:12px;fill:#333}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}
</style></head><body>
<h1>{{.Who}}: <span class="cause">{{.R.Verdict.Cause}}</span></h1>
<p class="meta">{{.R.Incident.Kind}} at {{.At}} · confidence {{.R.Verdict.Confidence}} · near the memory limit: {{if .R.Verdict.NearMemoryLimit}}yes{{else}}no{{end}} · ran long: {{if .R.Verdict.RanLong}}yes{{else}}no{{end}} · report {{.R.ID}}</p>
<p><strong>{{.R.Verdict.Summary}}</strong></p>
{{if .R.Verdict.Advice}}<h2>What to change</h2><ul>{{range .R.Verdict.Advice}}<li>{{.}}</li>{{end}}</ul>{{end}}
<h2>The worker's last {{.Span}}</h2>
{{range .Charts}}<h3>{{.Title}} ({{.Unit}})</h3>{{.SVG}}{{end}}
<h2>Evidence</h2>
<table><tr><th>fact</th><th>value</th><th>threshold</th></tr>{{range .R.Verdict.Evidence}}<tr><td>{{.Fact}}</td><td>{{.Value}}</td><td>{{.Threshold}}</td></tr>{{end}}</table>
{{if .R.Verdict.Missing}}<p class="meta">Missing evidence: {{range .R.Verdict.Missing}}{{.}}; {{end}}</p>{{end}}
<h2>Gunicorn</h2>
<p>version {{or .R.Gunicorn.Version "unknown"}} · timeout {{.R.Gunicorn.Timeout}} s · {{.R.Gunicorn.Workers}} workers · class {{.R.Gunicorn.WorkerClass}}{{if .R.Gunicorn.MaxRequests}} · max requests {{.R.Gunicorn.MaxRequests}}{{end}}{{if .R.Gunicorn.PreloadApp}} · preload{{end}}{{if .R.Gunicorn.DirtyWorkers}} · {{.R.Gunicorn.DirtyWorkers}} dirty workers ({{range .R.Gunicorn.DirtyApps}}{{.}} {{end}}) · dirty timeout {{.R.Gunicorn.DirtyTimeout}} s · {{.R.Gunicorn.DirtyThreads}} dirty threads{{end}}</p>
{{if .R.Incident.Lines}}<pre>{{range .R.Incident.Lines}}{{.}}
{{end}}</pre>{{end}}
{{if .R.Incident.Requests}}<h3>Requests in flight when it died</h3><ul>{{range .R.Incident.Requests}}<li>{{.Running}}</li>{{end}}</ul>{{end}}
{{if .R.Incident.PythonStack}}<h3>Python stack{{with .R.Incident.StackThread}} (thread {{.}}){{end}}, innermost last</h3><pre>{{range .R.Incident.PythonStack}}{{.}}
{{end}}</pre>{{end}}
{{if .R.Incident.Traceback}}<h3>Traceback</h3><pre>{{range .R.Incident.Traceback}}{{.}}
{{end}}</pre>{{end}}
<p class="meta">{{with .R.Host.Hostname}}host {{.}} · {{end}}{{with .R.Host.Instance}}instance {{.}} · {{end}}{{with .R.Host.GwrapVersion}}gwrap {{.}} · {{end}}written {{.Created}}</p>
</body></html>
`))

// WriteHTML renders a self-contained page (inline CSS and SVG, no external asset) of the report.
func WriteHTML(w io.Writer, r Report) error {
	span := "samples"
	if n := len(r.Timeline); n > 1 {
		span = fmt.Sprintf("%.0f seconds", r.Timeline[n-1].T.Sub(r.Timeline[0].T).Seconds())
	}
	return page.Execute(w, struct {
		R       Report
		Who     string
		At      string
		Created string
		Span    string
		Charts  []chart
	}{r, subject(r.Incident), r.Incident.At.UTC().Format(time.RFC3339), r.Created.UTC().Format(time.RFC3339), span, charts(r)})
}

// subject names the process a report is about: "Worker 812", "Dirty worker 812 (app.ml:Heavy)",
// "The dirty arbiter 811".
func subject(inc Incident) string {
	return who(Facts{PID: inc.PID, Role: inc.Role, Apps: inc.DirtyApps})
}

// limitOf is the timeout the worker's heartbeat is charted against: --dirty-timeout for a
// dirty worker.
func limitOf(r Report) int {
	if r.Incident.Role == RoleDirty && r.Gunicorn.DirtyTimeout > 0 {
		return r.Gunicorn.DirtyTimeout
	}
	return r.Gunicorn.Timeout
}
