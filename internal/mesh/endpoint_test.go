package mesh

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestEndpointJSON(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Endpoint
	}{
		{
			name: "process nested",
			in:   `{"id":"t-1","state":"RUNNING","health":"HEALTHY","process":{"pid":42,"restarts":2,"lastExit":"exit status 3"}}`,
			want: Endpoint{ID: "t-1", State: TaskRunning, Health: HealthHealthy,
				Process: &ProcessStatus{PID: 42, Restarts: 2, LastExit: "exit status 3"}},
		},
		{
			// As stored by a control plane from before ProcessStatus.
			name: "old record with top-level process fields",
			in:   `{"id":"t-1","mesh":"m","service":"s","address":"127.0.0.2","port":8080,"pid":42,"restarts":2,"state":"STOPPED","health":"UNKNOWN","lastExit":"exit status 3","restartAt":"2026-01-02T03:04:05Z"}`,
			want: Endpoint{ID: "t-1", Mesh: "m", Service: "s", Address: "127.0.0.2", Port: 8080, State: TaskStopped, Health: HealthUnknown,
				Process: &ProcessStatus{PID: 42, Restarts: 2, LastExit: "exit status 3", RestartAt: "2026-01-02T03:04:05Z"}},
		},
		{
			name: "nested wins over top level",
			in:   `{"id":"t-1","pid":1,"process":{"pid":42}}`,
			want: Endpoint{ID: "t-1", Process: &ProcessStatus{PID: 42}},
		},
		{
			// A Kubernetes endpoint (a Ready pod) has no process.
			name: "no process",
			in:   `{"id":"ns/vn/10.0.0.1","address":"10.0.0.1","port":8080,"state":"RUNNING","health":"HEALTHY"}`,
			want: Endpoint{ID: "ns/vn/10.0.0.1", Address: "10.0.0.1", Port: 8080, State: TaskRunning, Health: HealthHealthy},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Endpoint
			if err := json.Unmarshal([]byte(tt.in), &got); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("decoded endpoint (-want +got):\n%s", d)
			}
			// It round-trips in the new shape.
			b, err := json.Marshal(&got)
			if err != nil {
				t.Fatal(err)
			}
			var again Endpoint
			if err := json.Unmarshal(b, &again); err != nil {
				t.Fatalf("unmarshal %s: %v", b, err)
			}
			if d := cmp.Diff(got, again); d != "" {
				t.Errorf("round trip through %s (-first +second):\n%s", b, d)
			}
		})
	}
}

func TestEndpointMarshalNestsProcess(t *testing.T) {
	b, err := json.Marshal(&Endpoint{ID: "t-1", Process: &ProcessStatus{PID: 42}})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["pid"]; ok {
		t.Errorf("got a top-level pid in %s, want it under process", b)
	}
	if got, want := string(m["process"]), `{"pid":42}`; got != want {
		t.Errorf("got process %s, want %s", got, want)
	}
}

func TestEndpointProcNilSafe(t *testing.T) {
	var nilEP *Endpoint
	if got := nilEP.Proc(); got != (ProcessStatus{}) {
		t.Errorf("nil endpoint: got %+v, want zero", got)
	}
	if got := (&Endpoint{}).Proc(); got != (ProcessStatus{}) {
		t.Errorf("no process: got %+v, want zero", got)
	}
}
