package load

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// FormatReport formats one second's report as one line, such as
//
//	3s  sent 200  ok 200  0.9: 104  1.0: 96  failed 0  p50 1.2ms  p99 4.1ms
//
// with the failures by kind after "failed" when there are any, and the
// dropped count when there is one.
func FormatReport(r Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%3ds  sent %d  ok %d", r.Second, r.Sent, r.OK)
	for _, k := range sortedKeys(r.ByVersion) {
		fmt.Fprintf(&b, "  %s: %d", k, r.ByVersion[k])
	}
	fmt.Fprintf(&b, "  failed %d", r.Failed)
	if r.Failed > 0 {
		parts := make([]string, 0, len(r.Failures))
		for _, k := range byCount(r.Failures) {
			parts = append(parts, fmt.Sprintf("%s: %d", k, r.Failures[k]))
		}
		fmt.Fprintf(&b, " (%s)", strings.Join(parts, ", "))
	}
	if r.Dropped > 0 {
		fmt.Fprintf(&b, "  dropped %d", r.Dropped)
	}
	if r.OK+r.Failed > 0 {
		fmt.Fprintf(&b, "  p50 %s  p99 %s", formatDuration(r.Latency.P50), formatDuration(r.Latency.P99))
	}
	return b.String()
}

// Print writes the run's summary: settings, totals, replies per version,
// failures per kind and latency percentiles.
func (r *Result) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	mode := "closed loop"
	if r.RPS > 0 {
		mode = fmt.Sprintf("open loop at %d rps", r.RPS)
	}
	status := ""
	if r.Interrupted {
		status = ", interrupted"
	}
	fmt.Fprintf(tw, "Target\t%s\n", r.URL)
	fmt.Fprintf(tw, "Load\t%s, concurrency %d\n", mode, r.Concurrency)
	fmt.Fprintf(tw, "Duration\t%s (%.1f requests/s sent%s)\n", formatDuration(r.Duration), r.Achieved, status)
	fmt.Fprintf(tw, "Requests\tsent %d\tok %d\tfailed %d\tdropped %d", r.Sent, r.OK, r.Failed, r.Dropped)
	if r.Canceled > 0 {
		fmt.Fprintf(tw, "\tcanceled %d", r.Canceled)
	}
	fmt.Fprintln(tw)
	done := r.OK + r.Failed
	if len(r.ByVersion) > 0 {
		fmt.Fprintln(tw, "Versions")
		for _, k := range sortedKeys(r.ByVersion) {
			fmt.Fprintf(tw, "  %s\t%d\t%s\n", k, r.ByVersion[k], percent(r.ByVersion[k], done))
		}
	}
	if len(r.Failures) > 0 {
		fmt.Fprintln(tw, "Failures")
		for _, k := range byCount(r.Failures) {
			fmt.Fprintf(tw, "  %s\t%d\t%s\n", k, r.Failures[k], percent(r.Failures[k], done))
		}
	}
	if done > 0 {
		l := r.Latency
		fmt.Fprintf(tw, "Latency\tp50 %s\tp90 %s\tp99 %s\tp99.9 %s\tmax %s\n",
			formatDuration(l.P50), formatDuration(l.P90), formatDuration(l.P99),
			formatDuration(l.P999), formatDuration(l.Max))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("load: printing summary: %w", err)
	}
	return nil
}

func percent(n, of int64) string {
	if of == 0 {
		return ""
	}
	return fmt.Sprintf("%.1f%%", 100*float64(n)/float64(of))
}

func sortedKeys(m map[string]int64) []string {
	return slices.Sorted(maps.Keys(m))
}

// byCount returns m's keys, largest count first, then by name.
func byCount(m map[string]int64) []string {
	keys := sortedKeys(m)
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Compare(m[b], m[a]) })
	return keys
}

// formatDuration rounds d to about three significant digits.
func formatDuration(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= 100*time.Millisecond:
		return d.Round(time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	case d >= 100*time.Microsecond:
		return d.Round(time.Microsecond).String()
	}
	return d.Round(100 * time.Nanosecond).String()
}
