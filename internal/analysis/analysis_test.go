package analysis

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

var inf = math.Inf(1)

func TestQuantile(t *testing.T) {
	tests := []struct {
		name    string
		buckets []Bucket
		q       float64
		want    float64
	}{
		{"empty", nil, 0.99, math.NaN()},
		{"no observations", []Bucket{{0.1, 0}, {inf, 0}}, 0.99, math.NaN()},
		// 100 observations, all in (0.1, 0.5]: rank 99 -> 0.1 + 0.4*99/100.
		{"interpolate in bucket", []Bucket{{0.1, 0}, {0.5, 100}, {inf, 100}}, 0.99, 0.1 + 0.4*0.99},
		// First bucket starts at 0.
		{"first bucket", []Bucket{{0.2, 10}, {inf, 10}}, 0.5, 0.1},
		// rank 99 of 100 lands in +Inf: highest finite bound.
		{"in +Inf bucket", []Bucket{{0.1, 50}, {0.5, 90}, {inf, 100}}, 0.99, 0.5},
		{"median", []Bucket{{0.1, 50}, {0.5, 90}, {inf, 100}}, 0.5, 0.1},
		{"p90 exact bound", []Bucket{{0.1, 50}, {0.5, 90}, {inf, 100}}, 0.9, 0.5},
		{"q above 1", []Bucket{{0.1, 1}, {inf, 1}}, 1.5, inf},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Sample{Buckets: tt.buckets}.Quantile(tt.q)
			if math.IsNaN(tt.want) {
				if !math.IsNaN(got) {
					t.Errorf("Quantile(%v) = %v, want NaN", tt.q, got)
				}
				return
			}
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}

func TestIsFailureCode(t *testing.T) {
	for code, want := range map[string]bool{
		"OK": false, "InvalidArgument": false, "NotFound": false, "Canceled": false,
		"FAILED_PRECONDITION": false, "Unknown": true, "DeadlineExceeded": true,
		"DEADLINE_EXCEEDED": true, "ResourceExhausted": true, "Internal": true,
		"Unavailable": true, "DataLoss": true, "Unimplemented": true,
	} {
		if got := IsFailureCode(code); got != want {
			t.Errorf("IsFailureCode(%q) = %v, want %v", code, got, want)
		}
	}
}

func task(req, errs int64, b1, b2 int64) Sample {
	codes := map[string]int64{"OK": req - errs}
	if errs > 0 {
		codes["Unavailable"] = errs
	}
	return Sample{Requests: req, Errors: errs, Codes: codes,
		Buckets: []Bucket{{0.1, b1}, {0.5, b2}, {inf, req}}}
}

func withTasks(ts map[string]Sample) Sample {
	s := Sample{Tasks: ts}
	for _, k := range sortedKeys(ts) {
		s.Add(ts[k])
	}
	return s
}

func TestDelta(t *testing.T) {
	tests := []struct {
		name string
		a, b Sample
		want Sample
	}{
		{
			name: "plain",
			a:    task(100, 1, 90, 100),
			b:    task(300, 11, 250, 290),
			want: Sample{Requests: 200, Errors: 10, Codes: map[string]int64{"OK": 190, "Unavailable": 10},
				Buckets: []Bucket{{0.1, 160}, {0.5, 190}, {inf, 200}}},
		},
		{
			name: "plain counter reset takes the new value",
			a:    task(100, 1, 90, 100),
			b:    task(30, 0, 30, 30),
			want: Sample{Requests: 30, Codes: map[string]int64{"OK": 30},
				Buckets: []Bucket{{0.1, 30}, {0.5, 30}, {inf, 30}}},
		},
		{
			name: "per task: one restarted with a new pid, one new, one gone",
			a: withTasks(map[string]Sample{
				"t1/10": task(100, 0, 100, 100),
				"t2/20": task(500, 0, 500, 500),
				"t3/30": task(50, 0, 50, 50),
			}),
			b: withTasks(map[string]Sample{
				"t1/10": task(150, 5, 140, 150), // +50, 5 errors
				"t2/21": task(20, 0, 20, 20),    // restarted: 20 fresh
				"t4/40": task(7, 0, 7, 7),       // new task
			}),
			want: Sample{Requests: 77, Errors: 5, Codes: map[string]int64{"OK": 72, "Unavailable": 5},
				Buckets: []Bucket{{0.1, 67}, {0.5, 77}, {inf, 77}}},
		},
		{
			name: "per task: reset under the same key",
			a:    withTasks(map[string]Sample{"t1": task(1000, 0, 1000, 1000), "t2": task(10, 0, 10, 10)}),
			b:    withTasks(map[string]Sample{"t1": task(40, 40, 0, 0), "t2": task(20, 0, 20, 20)}),
			want: Sample{Requests: 50, Errors: 40, Codes: map[string]int64{"OK": 10, "Unavailable": 40},
				Buckets: []Bucket{{0.1, 10}, {0.5, 10}, {inf, 50}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Delta(tt.a, tt.b)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Delta mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEvaluate(t *testing.T) {
	fast := []Bucket{{0.01, 0}, {0.1, 0}, {inf, 0}}
	mk := func(req, errs int64, slow bool) Sample {
		b := append([]Bucket(nil), fast...)
		if slow {
			b[0].Count, b[1].Count = 0, req/2 // p99 beyond 0.1s: +Inf bucket
			b = []Bucket{{0.01, 0}, {0.1, req / 2}, {1, req}, {inf, req}}
		} else {
			b[0].Count, b[1].Count = req, req
		}
		b[len(b)-1].Count = req
		return Sample{Requests: req, Errors: errs, Buckets: b}
	}
	tests := []struct {
		name         string
		d            Sample
		g            mesh.Gates
		judged, pass bool
		detail       string
	}{
		{"too few", mk(12, 0, false), mesh.Gates{}, false, false, "12 requests, fewer than the 20 needed to judge"},
		{"pass", mk(400, 1, false), mesh.Gates{}, true, true, "success rate 99.7% >= 99.0%, p99 latency 9.9ms <= 500ms over 400 requests"},
		{"low success", mk(412, 82, false), mesh.Gates{}, true, false, "success rate 80.0% < 99.0% over 412 requests"},
		{"rounds down", mk(10000, 101, false), mesh.Gates{}, true, false, "success rate 98.9% < 99.0% over 10000 requests"},
		{"slow", mk(400, 0, true), mesh.Gates{}, true, false, "p99 latency 982ms > 500ms over 400 requests"},
		{"custom gates", mk(50, 5, true), mesh.Gates{MinSuccessRate: 0.8, MaxP99Millis: 2000, MinRequests: 50}, true, true, "success rate 90.0% >= 80.0%, p99 latency 982ms <= 2000ms over 50 requests"},
		{"no histogram", Sample{Requests: 30}, mesh.Gates{}, true, true, "success rate 100.0% >= 99.0%, p99 latency n/a over 30 requests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := Evaluate(tt.d, tt.g)
			if a.Judged != tt.judged || a.Passed != tt.pass {
				t.Errorf("judged, passed = %v, %v, want %v, %v (%s)", a.Judged, a.Passed, tt.judged, tt.pass, a.Detail)
			}
			if a.Detail != tt.detail {
				t.Errorf("detail = %q, want %q", a.Detail, tt.detail)
			}
			if a.Requests != tt.d.Requests || a.Errors != tt.d.Errors {
				t.Errorf("requests, errors = %d, %d, want %d, %d", a.Requests, a.Errors, tt.d.Requests, tt.d.Errors)
			}
		})
	}
}

func TestParse(t *testing.T) {
	const page = `# HELP grpc_server_handled_total x
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="Echo",grpc_service="proto.echo.EchoService"} 90
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Echo",grpc_service="proto.echo.EchoService"} 8
grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Echo",grpc_service="proto.echo.EchoService"} 2
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Check",grpc_service="grpc.health.v1.Health"} 1000
grpc_server_handled_total{grpc_code="Internal",grpc_method="X",grpc_service="grpc.reflection.v1.ServerReflection"} 5
# TYPE grpc_server_handling_seconds histogram
grpc_server_handling_seconds_bucket{grpc_method="Echo",grpc_service="proto.echo.EchoService",le="0.1"} 95
grpc_server_handling_seconds_bucket{grpc_method="Echo",grpc_service="proto.echo.EchoService",le="0.5"} 99
grpc_server_handling_seconds_bucket{grpc_method="Echo",grpc_service="proto.echo.EchoService",le="+Inf"} 100
grpc_server_handling_seconds_sum{grpc_method="Echo",grpc_service="proto.echo.EchoService"} 3
grpc_server_handling_seconds_count{grpc_method="Echo",grpc_service="proto.echo.EchoService"} 100
grpc_server_handling_seconds_bucket{grpc_method="Check",grpc_service="grpc.health.v1.Health",le="0.1"} 0
grpc_server_handling_seconds_bucket{grpc_method="Check",grpc_service="grpc.health.v1.Health",le="0.5"} 0
grpc_server_handling_seconds_bucket{grpc_method="Check",grpc_service="grpc.health.v1.Health",le="+Inf"} 1000
grpc_server_handling_seconds_sum{grpc_method="Check",grpc_service="grpc.health.v1.Health"} 3000
grpc_server_handling_seconds_count{grpc_method="Check",grpc_service="grpc.health.v1.Health"} 1000
`
	got, err := Parse(strings.NewReader(page), "grpc_server_handled_total", "grpc_server_handling_seconds")
	if err != nil {
		t.Fatal(err)
	}
	want := Sample{Requests: 100, Errors: 8,
		Codes:   map[string]int64{"OK": 90, "Unavailable": 8, "InvalidArgument": 2},
		Buckets: []Bucket{{0.1, 95}, {0.5, 99}, {inf, 100}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse mismatch (-want +got):\n%s", diff)
	}
}

func TestParseServed(t *testing.T) {
	const grpcPage = `# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="Echo",grpc_service="proto.echo.EchoService"} 9
grpc_server_handled_total{grpc_code="Unavailable",grpc_method="Echo",grpc_service="proto.echo.EchoService"} 1
grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health"} 500
`
	// The echo client's page: HTTP server metrics, and client-side gRPC
	// metrics that are not requests it served.
	const httpPage = `# TYPE http_requests_total counter
http_requests_total{code="200"} 70
http_requests_total{code="400"} 5
http_requests_total{code="503"} 3
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.1"} 70
http_request_duration_seconds_bucket{le="0.5"} 77
http_request_duration_seconds_bucket{le="+Inf"} 78
http_request_duration_seconds_sum 2
http_request_duration_seconds_count 78
# TYPE grpc_client_handled_total counter
grpc_client_handled_total{grpc_code="OK",grpc_method="Echo",grpc_service="proto.echo.EchoService"} 1000
`
	for _, tt := range []struct {
		name string
		page string
		want Sample
	}{
		{"grpc server", grpcPage, Sample{Requests: 10, Errors: 1, Codes: map[string]int64{"OK": 9, "Unavailable": 1}}},
		{"http server", httpPage, Sample{Requests: 78, Errors: 3, Buckets: []Bucket{{0.1, 70}, {0.5, 77}, {inf, 78}}}},
		{"both", grpcPage + httpPage, Sample{Requests: 88, Errors: 4, Codes: map[string]int64{"OK": 9, "Unavailable": 1},
			Buckets: []Bucket{{0.1, 70}, {0.5, 77}, {inf, 78}}}},
		{"neither", "# TYPE go_goroutines gauge\ngo_goroutines 7\n", Sample{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseServed(strings.NewReader(tt.page))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseServed mismatch (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := ParseServed(strings.NewReader("not { a metrics page")); err == nil {
		t.Error("ParseServed of garbage: no error")
	}
}
