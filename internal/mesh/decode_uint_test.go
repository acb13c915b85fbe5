package mesh

import "testing"

// A rollout's status carries uint64 fields (storeRevision); they must
// survive a JSON round trip through the strict decoder.
func TestDecodeRolloutStatusUint(t *testing.T) {
	r := New(KindRollout, "echo", "echo-server", &RolloutSpec{Service: "echo-server", Steps: []int{100}})
	r.Status = &RolloutStatus{Phase: PhaseBaking, StoreRevision: 1 << 40}
	b, err := EncodeJSON([]*Resource{r})
	if err != nil {
		t.Fatal(err)
	}
	var got Resource
	if err := got.UnmarshalJSON(b); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if st := got.RolloutStatus(); st == nil || st.StoreRevision != 1<<40 {
		t.Fatalf("got status %+v, want storeRevision %d", got.Status, uint64(1<<40))
	}
	if err := new(Resource).UnmarshalJSON([]byte(`{"apiVersion":"gmesh.dev/v1","kind":"Rollout","metadata":{"name":"x","mesh":"m"},"spec":{"service":"x","steps":[100]},"status":{"storeRevision":-1}}`)); err == nil {
		t.Fatal("a negative storeRevision decoded without error")
	}
}
