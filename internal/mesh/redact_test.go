package mesh

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestRedacted(t *testing.T) {
	const secret = "hunter2-secret"
	ro := New(KindRollout, "echo", "echo-server", &RolloutSpec{Service: "echo-server",
		Target: TaskSetSpec{Version: "1.0", Command: []string{"/bin/x"}, Env: map[string]string{"DB_PASSWORD": secret, "EMPTY": ""}}})
	ro.Status = &RolloutStatus{Phase: PhaseBaking, History: []TaskSetSpec{{Version: "0.9", Env: map[string]string{"OLD_KEY": secret}}, {Version: "1.0"}}}
	ts := New(KindTaskSet, "echo", "echo-server-1-0", &TaskSetSpec{Service: "echo-server", Env: map[string]string{"DB_PASSWORD": secret}})
	svc := New(KindService, "echo", "echo-server", &ServiceSpec{VirtualNode: "n", Env: map[string]string{"FROM_STACK": "shown"}})
	for _, tt := range []struct {
		r        *Resource
		wantKeys []string
		absent   string
	}{
		{ro, []string{`"DB_PASSWORD":"(set)"`, `"EMPTY":"(set)"`, `"OLD_KEY":"(set)"`}, secret},
		{ts, []string{`"DB_PASSWORD":"(set)"`}, secret},
		{svc, []string{`"FROM_STACK":"shown"`}, "(set)"},
	} {
		before, _ := json.Marshal(tt.r)
		got, err := json.Marshal(tt.r.Redacted())
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range tt.wantKeys {
			if !strings.Contains(string(got), k) {
				t.Errorf("%s redacted: got %s, want it to contain %s", tt.r.Ref(), got, k)
			}
		}
		if strings.Contains(string(got), tt.absent) {
			t.Errorf("%s redacted: got %s, want no %q", tt.r.Ref(), got, tt.absent)
		}
		if after, _ := json.Marshal(tt.r); string(after) != string(before) {
			t.Errorf("Redacted changed its argument: %s, was %s", after, before)
		}
	}
	if got := RedactedAll([]*Resource{ro, nil, ts}); len(got) != 3 || got[1] != nil || got[0].Rollout().Target.Env["DB_PASSWORD"] != RedactedValue {
		t.Errorf("RedactedAll: got %v", got)
	}
	if RedactEnv(nil) != nil {
		t.Error("RedactEnv(nil) is not nil")
	}
}
