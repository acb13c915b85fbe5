package load

import (
	"math"
	"math/bits"
	"time"
)

// The latency histogram is log-linear, in the style of HdrHistogram: values
// (nanoseconds) below 2*subBuckets are stored exactly; above that, each
// power-of-two range is split into subBuckets linear buckets, so a bucket is
// never wider than 1/subBuckets (0.8%) of the values it holds. Values above
// maxLatency land in the last bucket (Max is tracked exactly). The whole
// histogram is a fixed array: recording never allocates.
const (
	subBucketBits = 7
	subBuckets    = 1 << subBucketBits // 128
	maxLatency    = 60 * time.Second
)

// histogramSize buckets hold every value below 2^36ns (68.7s), more than
// maxLatency; TestHistogramCoversMax checks it.
const histogramSize = 30 * subBuckets

type histogram struct {
	count  int64
	max    int64
	counts [histogramSize]int64
}

// bucketIndex returns the bucket for v nanoseconds (v >= 0).
func bucketIndex(v int64) int {
	if v < 2*subBuckets {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - subBucketBits - 1
	return (shift+1)*subBuckets + int(v>>uint(shift)) - subBuckets
}

// bucketBounds returns the half-open range [lo, hi) of values in bucket i.
func bucketBounds(i int) (lo, hi int64) {
	if i < 2*subBuckets {
		return int64(i), int64(i) + 1
	}
	shift := i/subBuckets - 1
	lo = int64(i%subBuckets+subBuckets) << uint(shift)
	return lo, lo + 1<<uint(shift)
}

// record adds one observation. It never allocates.
func (h *histogram) record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	if v > h.max {
		h.max = v
	}
	if v > int64(maxLatency) {
		v = int64(maxLatency)
	}
	h.counts[bucketIndex(v)]++
	h.count++
}

func (h *histogram) reset() {
	*h = histogram{}
}

// merge adds o's observations to h.
func (h *histogram) merge(o *histogram) {
	if o.count == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.count += o.count
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the value at quantile q in [0, 1]: the midpoint of the
// bucket holding the observation of rank ceil(q*count), never more than the
// exact maximum. It returns 0 for an empty histogram.
func (h *histogram) quantile(q float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	if q >= 1 {
		return time.Duration(h.max)
	}
	rank := int64(math.Ceil(q * float64(h.count)))
	if rank < 1 {
		rank = 1
	}
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := bucketBounds(i)
			mid := lo + (hi-lo-1)/2
			return time.Duration(min(mid, h.max))
		}
	}
	return time.Duration(h.max)
}

func (h *histogram) latency() Latency {
	return Latency{
		P50:  h.quantile(0.50),
		P90:  h.quantile(0.90),
		P99:  h.quantile(0.99),
		P999: h.quantile(0.999),
		Max:  time.Duration(h.max),
	}
}
