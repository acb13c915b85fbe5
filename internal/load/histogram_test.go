package load

import (
	"math"
	"testing"
	"time"
)

func TestHistogramCoversMax(t *testing.T) {
	if got := bucketIndex(int64(maxLatency)); got >= histogramSize {
		t.Fatalf("bucketIndex(maxLatency) = %d, want < %d", got, histogramSize)
	}
}

func TestBucketBoundsRoundTrip(t *testing.T) {
	prevHi := int64(0)
	for i := range histogramSize {
		lo, hi := bucketBounds(i)
		if lo != prevHi {
			t.Fatalf("bucket %d starts at %d, want %d (contiguous)", i, lo, prevHi)
		}
		if got := bucketIndex(lo); got != i {
			t.Fatalf("bucketIndex(%d) = %d, want %d", lo, got, i)
		}
		if got := bucketIndex(hi - 1); got != i {
			t.Fatalf("bucketIndex(%d) = %d, want %d", hi-1, got, i)
		}
		if lo >= 2*subBuckets {
			if w := float64(hi-lo) / float64(lo); w > 1.0/subBuckets {
				t.Fatalf("bucket %d [%d, %d) has relative width %.4f, want <= %.4f", i, lo, hi, w, 1.0/subBuckets)
			}
		}
		prevHi = hi
	}
}

func TestHistogramQuantiles(t *testing.T) {
	tests := []struct {
		name   string
		values func(record func(time.Duration))
		want   Latency
	}{
		{
			name: "uniform 1µs..100ms",
			values: func(record func(time.Duration)) {
				for i := 1; i <= 100_000; i++ {
					record(time.Duration(i) * time.Microsecond)
				}
			},
			want: Latency{
				P50:  50 * time.Millisecond,
				P90:  90 * time.Millisecond,
				P99:  99 * time.Millisecond,
				P999: 99900 * time.Microsecond,
				Max:  100 * time.Millisecond,
			},
		},
		{
			name: "bimodal 90% 1ms, 10% 200ms",
			values: func(record func(time.Duration)) {
				for i := range 1000 {
					if i%10 == 0 {
						record(200 * time.Millisecond)
					} else {
						record(time.Millisecond)
					}
				}
			},
			want: Latency{
				P50:  time.Millisecond,
				P90:  time.Millisecond,
				P99:  200 * time.Millisecond,
				P999: 200 * time.Millisecond,
				Max:  200 * time.Millisecond,
			},
		},
		{
			name: "exact small values",
			values: func(record func(time.Duration)) {
				for i := 1; i <= 100; i++ {
					record(time.Duration(i))
				}
			},
			want: Latency{P50: 50, P90: 90, P99: 99, P999: 100, Max: 100},
		},
		{
			name: "beyond the range",
			values: func(record func(time.Duration)) {
				record(-time.Second)
				record(2 * time.Hour)
			},
			want: Latency{P50: 0, P90: maxLatency, P99: maxLatency, P999: maxLatency, Max: 2 * time.Hour},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := new(histogram)
			tt.values(h.record)
			got := h.latency()
			check := func(name string, got, want time.Duration) {
				t.Helper()
				if math.Abs(float64(got-want)) > float64(want)/100 {
					t.Errorf("%s = %s, want %s ±1%%", name, got, want)
				}
			}
			check("p50", got.P50, tt.want.P50)
			check("p90", got.P90, tt.want.P90)
			check("p99", got.P99, tt.want.P99)
			check("p99.9", got.P999, tt.want.P999)
			if got.Max != tt.want.Max {
				t.Errorf("max = %s, want %s", got.Max, tt.want.Max)
			}
		})
	}
}

func TestHistogramMergeAndEmpty(t *testing.T) {
	var a, b histogram
	if got := a.latency(); got != (Latency{}) {
		t.Fatalf("empty latency = %+v, want zero", got)
	}
	for range 10 {
		a.record(time.Millisecond)
		b.record(3 * time.Millisecond)
	}
	a.merge(&b)
	if a.count != 20 {
		t.Fatalf("merged count = %d, want 20", a.count)
	}
	if got := a.quantile(0.75); math.Abs(float64(got-3*time.Millisecond)) > float64(30*time.Microsecond) {
		t.Errorf("merged p75 = %s, want 3ms ±1%%", got)
	}
	if a.max != int64(3*time.Millisecond) {
		t.Errorf("merged max = %d, want %d", a.max, 3*time.Millisecond)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := new(histogram)
	d := []time.Duration{15 * time.Microsecond, 800 * time.Microsecond, 3 * time.Millisecond, 120 * time.Millisecond, 4 * time.Second}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h.record(d[i%len(d)])
		i++
	}
	if allocs := testing.AllocsPerRun(100, func() { h.record(time.Millisecond) }); allocs != 0 {
		b.Fatalf("record allocates %v times, want 0", allocs)
	}
}
