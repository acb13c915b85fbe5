// Package analysis judges a new version by its own request metrics: it
// scrapes the tasks of a task set, takes the difference of two cumulative
// samples (surviving task restarts), and evaluates a rollout's gates (success
// rate by gRPC status code, p99 latency from histogram buckets, a minimum
// request count before judging).
package analysis

import (
	"math"
	"sort"
	"strconv"
	"strings"
)

// Bucket is one cumulative histogram bucket: Count observations were at most
// UpperBound seconds. The last bucket of a histogram is +Inf.
type Bucket struct {
	UpperBound float64 `json:"upperBound"`
	Count      int64   `json:"count"`
}

// Sample is a set of cumulative request counters: the sum over a task set's
// tasks, and each task's own counters (so that Delta can tell a restarted
// task from one that served no requests).
type Sample struct {
	// Requests counts handled RPCs; Errors those that ended with a code that
	// means a server problem (see IsFailureCode).
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
	// Buckets is the handling-latency histogram in seconds, cumulative,
	// ascending by bound.
	Buckets []Bucket `json:"buckets,omitempty"`
	// Codes counts handled RPCs by gRPC code name ("OK", "Unavailable").
	Codes map[string]int64 `json:"codes,omitempty"`
	// Tasks holds each scraped task's counters, keyed by TaskKey. Nil in a
	// delta and in samples built by hand.
	Tasks map[string]Sample `json:"tasks,omitempty"`
	// Failed lists tasks whose scrape failed ("id: error"); they are not in
	// the sums.
	Failed []string `json:"failed,omitempty"`
}

// TaskKey identifies one incarnation of a task: a restarted process (new
// pid) gets a new key, so its fresh counters are not subtracted from the old
// ones.
func TaskKey(endpointID string, pid int) string {
	if pid == 0 {
		return endpointID
	}
	return endpointID + "/" + strconv.Itoa(pid)
}

// failureCodes are the gRPC codes that count against a version: the ones that
// say the server (not the caller) has a problem. Client-side codes
// (CANCELLED, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED,
// FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNAUTHENTICATED) are the
// caller's business and count as successes of the server.
var failureCodes = map[string]bool{
	"UNKNOWN":           true,
	"DEADLINEEXCEEDED":  true,
	"RESOURCEEXHAUSTED": true,
	"INTERNAL":          true,
	"UNAVAILABLE":       true,
	"DATALOSS":          true,
	"UNIMPLEMENTED":     true,
}

// IsFailureCode reports whether a gRPC code name, spelled as grpc-go prints
// it ("DeadlineExceeded") or as the spec does ("DEADLINE_EXCEEDED"), counts
// as a failure: UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL,
// UNAVAILABLE, DATA_LOSS, UNIMPLEMENTED.
func IsFailureCode(code string) bool {
	return failureCodes[strings.ToUpper(strings.ReplaceAll(code, "_", ""))]
}

// Add adds o's counters to s (not o's Tasks).
func (s *Sample) Add(o Sample) {
	s.Requests += o.Requests
	s.Errors += o.Errors
	if len(o.Codes) > 0 && s.Codes == nil {
		s.Codes = map[string]int64{}
	}
	for c, n := range o.Codes {
		s.Codes[c] += n
	}
	s.Buckets = mergeBuckets(s.Buckets, o.Buckets, 1)
}

// mergeBuckets returns a + sign*b by upper bound.
func mergeBuckets(a, b []Bucket, sign int64) []Bucket {
	if len(b) == 0 {
		return a
	}
	m := make(map[float64]int64, len(a)+len(b))
	for _, x := range a {
		m[x.UpperBound] += x.Count
	}
	for _, x := range b {
		m[x.UpperBound] += sign * x.Count
	}
	out := make([]Bucket, 0, len(m))
	for ub, n := range m {
		out = append(out, Bucket{UpperBound: ub, Count: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UpperBound < out[j].UpperBound })
	return out
}

// Delta returns the requests between a (earlier) and b (later). When b has
// per-task counters, the delta is taken task by task: a task absent from a
// (new, or restarted with a new pid) contributes all of its counters, and a
// task whose counters went down (restarted under the same key) contributes
// its new values, as Prometheus's increase() treats a counter reset. Tasks
// gone from b contribute nothing. Without per-task counters the sums are
// compared the same way.
func Delta(a, b Sample) Sample {
	if b.Tasks == nil {
		return delta1(a, b)
	}
	var out Sample
	for _, k := range sortedKeys(b.Tasks) {
		out.Add(delta1(a.Tasks[k], b.Tasks[k]))
	}
	out.Failed = b.Failed
	return out
}

func sortedKeys(m map[string]Sample) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// delta1 is b-a for one series set, or b when any counter went down.
func delta1(a, b Sample) Sample {
	d := Sample{
		Requests: b.Requests - a.Requests,
		Errors:   b.Errors - a.Errors,
		Buckets:  mergeBuckets(append([]Bucket(nil), b.Buckets...), a.Buckets, -1),
	}
	reset := d.Requests < 0 || d.Errors < 0
	for _, x := range d.Buckets {
		if x.Count < 0 {
			reset = true
		}
	}
	if len(b.Codes) > 0 || len(a.Codes) > 0 {
		d.Codes = map[string]int64{}
		for c, n := range b.Codes {
			d.Codes[c] = n - a.Codes[c]
		}
		for c, n := range a.Codes {
			if _, ok := b.Codes[c]; !ok {
				d.Codes[c] = -n
			}
		}
		for _, n := range d.Codes {
			if n < 0 {
				reset = true
			}
		}
	}
	if reset {
		r := Sample{Requests: b.Requests, Errors: b.Errors, Buckets: append([]Bucket(nil), b.Buckets...)}
		if b.Codes != nil {
			r.Codes = make(map[string]int64, len(b.Codes))
			for c, n := range b.Codes {
				r.Codes[c] = n
			}
		}
		return r
	}
	for c, n := range d.Codes {
		if n == 0 {
			delete(d.Codes, c)
		}
	}
	return d
}

// SuccessRate is the share of requests that did not fail, in 0..1; NaN when
// there were no requests.
func (s Sample) SuccessRate() float64 {
	if s.Requests <= 0 {
		return math.NaN()
	}
	return float64(s.Requests-s.Errors) / float64(s.Requests)
}

// Quantile estimates the q-quantile (0..1) of the latency histogram in
// seconds the way Prometheus's histogram_quantile does: find the bucket the
// rank falls in and interpolate linearly inside it (the first bucket starts
// at 0). A rank in the +Inf bucket yields the highest finite bound. NaN when
// the histogram is empty.
func (s Sample) Quantile(q float64) float64 {
	bs := s.Buckets
	if len(bs) == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	if q < 0 {
		return math.Inf(-1)
	}
	if q > 1 {
		return math.Inf(1)
	}
	total := bs[len(bs)-1].Count
	if total <= 0 {
		return math.NaN()
	}
	rank := q * float64(total)
	i := sort.Search(len(bs), func(i int) bool { return float64(bs[i].Count) >= rank })
	if i == len(bs) {
		i = len(bs) - 1
	}
	if math.IsInf(bs[i].UpperBound, 1) {
		if i == 0 {
			return math.NaN()
		}
		return bs[i-1].UpperBound
	}
	lower, prev := 0.0, 0.0
	if i > 0 {
		lower = bs[i-1].UpperBound
		prev = float64(bs[i-1].Count)
	} else if bs[0].UpperBound <= 0 {
		return bs[0].UpperBound
	}
	upper := bs[i].UpperBound
	in := float64(bs[i].Count) - prev
	if in <= 0 {
		return upper
	}
	return lower + (upper-lower)*(rank-prev)/in
}
