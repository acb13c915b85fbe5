package analysis

import (
	"fmt"
	"math"
	"strconv"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Default gates, as `gmesh deploy` documents them (the mesh package's).
const (
	DefaultMinSuccessRate = mesh.DefaultMinSuccessRate
	DefaultMaxP99Millis   = mesh.DefaultMaxP99Millis
	DefaultMinRequests    = mesh.DefaultMinRequests
)

// WithDefaults returns g with every zero threshold replaced by its default.
func WithDefaults(g mesh.Gates) mesh.Gates {
	if g.MinSuccessRate == 0 {
		g.MinSuccessRate = DefaultMinSuccessRate
	}
	if g.MaxP99Millis == 0 {
		g.MaxP99Millis = DefaultMaxP99Millis
	}
	if g.MinRequests == 0 {
		g.MinRequests = DefaultMinRequests
	}
	return g
}

// Evaluate judges the requests of a bake window (a Delta) against g (zero
// thresholds take their defaults). With fewer than MinRequests requests it
// does not judge (Judged false, Passed false). The latency gate applies only
// when the sample has a histogram. Detail says why, for a person:
// "success rate 80.1% < 99.0% over 412 requests".
func Evaluate(d Sample, g mesh.Gates) mesh.Analysis {
	g = WithDefaults(g)
	a := mesh.Analysis{Requests: d.Requests, Errors: d.Errors}
	sr := d.SuccessRate()
	if !math.IsNaN(sr) {
		a.SuccessRate = sr
	}
	p99 := d.Quantile(0.99) * 1000
	hasP99 := !math.IsNaN(p99)
	if hasP99 {
		a.P99Millis = p99
	}
	if d.Requests < g.MinRequests {
		a.Detail = fmt.Sprintf("%d requests, fewer than the %d needed to judge", d.Requests, g.MinRequests)
		return a
	}
	a.Judged = true
	over := fmt.Sprintf(" over %d requests", d.Requests)
	var fails []string
	if sr < g.MinSuccessRate {
		fails = append(fails, fmt.Sprintf("success rate %s < %s", pct(sr), pct(g.MinSuccessRate)))
	}
	if hasP99 && p99 > g.MaxP99Millis {
		fails = append(fails, fmt.Sprintf("p99 latency %s > %s", millis(p99), millis(g.MaxP99Millis)))
	}
	if len(fails) > 0 {
		a.Detail = join(fails) + over
		return a
	}
	a.Passed = true
	lat := "p99 latency n/a"
	if hasP99 {
		lat = fmt.Sprintf("p99 latency %s <= %s", millis(p99), millis(g.MaxP99Millis))
	}
	a.Detail = fmt.Sprintf("success rate %s >= %s, %s", pct(sr), pct(g.MinSuccessRate), lat) + over
	return a
}

func join(s []string) string {
	out := s[0]
	for _, x := range s[1:] {
		out += ", " + x
	}
	return out
}

// pct prints a rate as a percentage with one decimal, rounded down so that a
// failing 98.99% never prints as a passing-looking "99.0%".
func pct(r float64) string {
	return strconv.FormatFloat(math.Floor(r*1000+1e-9)/10, 'f', 1, 64) + "%"
}

func millis(ms float64) string {
	if ms >= 10 {
		return strconv.FormatFloat(math.Round(ms), 'f', -1, 64) + "ms"
	}
	return strconv.FormatFloat(math.Round(ms*100)/100, 'f', -1, 64) + "ms"
}
