package rollout

import (
	"encoding/json"
	"reflect"
	"strconv"
	"time"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Labels gmesh puts on the virtual node and task set a rollout creates, so
// a re-run after a crash recognises its own work.
const (
	LabelService  = "gmesh.dev/service"
	LabelRevision = "gmesh.dev/revision"
)

// StatusOf returns a copy of r's rollout status as the engine sees it: a
// status left by an earlier rollout of the same name (or none) reads as a
// fresh Pending one that keeps the earlier revision history.
func StatusOf(r *mesh.Resource) *mesh.RolloutStatus {
	spec, _ := r.Spec.(*mesh.RolloutSpec)
	if spec == nil {
		return &mesh.RolloutStatus{Phase: mesh.PhasePending, StepIndex: -1}
	}
	return effectiveStatus(spec, r)
}

func effectiveStatus(spec *mesh.RolloutSpec, r *mesh.Resource) *mesh.RolloutStatus {
	orig, _ := r.Status.(*mesh.RolloutStatus)
	if orig != nil && orig.Revision == spec.Target.Revision && orig.Phase != "" {
		return cloneStatus(orig)
	}
	st := &mesh.RolloutStatus{
		Phase:      mesh.PhasePending,
		StepIndex:  -1,
		Revision:   spec.Target.Revision,
		NewVersion: spec.Target.Version,
		Message:    "Waiting to start",
	}
	if orig != nil {
		st.History = append([]mesh.TaskSetSpec(nil), orig.History...)
	}
	return st
}

func cloneStatus(s *mesh.RolloutStatus) *mesh.RolloutStatus {
	if s == nil {
		return nil
	}
	var c mesh.RolloutStatus
	b, err := json.Marshal(s)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil { // cannot happen for this plain struct
		panic("rollout: clone status: " + err.Error())
	}
	return &c
}

func statusEqual(a, b *mesh.RolloutStatus) bool {
	if a == nil || b == nil {
		return a == b
	}
	return reflect.DeepEqual(cloneStatus(a), cloneStatus(b))
}

// Previous returns the revision that ran before the running one, which
// `gmesh rollback` deploys again, or nil when there is none.
func Previous(st *mesh.RolloutStatus) *mesh.TaskSetSpec {
	if st == nil || len(st.History) < 2 {
		return nil
	}
	prev := st.History[len(st.History)-2]
	return &prev
}

// RollbackSpec returns the spec of a rollout that deploys the revision
// before the running one again, through the same progressive flow, with
// from's steps, interval, timeout and gates.
func RollbackSpec(from *mesh.Resource) (*mesh.RolloutSpec, error) {
	spec, _ := from.Spec.(*mesh.RolloutSpec)
	if spec == nil {
		return nil, mesh.Errorf(mesh.EInvalid, "%s is not a rollout", from.Ref())
	}
	prev := Previous(StatusOf(from))
	if prev == nil {
		return nil, mesh.Errorf(mesh.ENotFound, "no earlier revision of %s to roll back to", spec.Service)
	}
	out := *spec
	out.Target = *prev
	out.Target.Draining = false
	out.Target.Revision = 0
	out.Target.VirtualNode = ""
	out.Rollback = true
	out.Force = false
	out.Route = ""
	return &out, nil
}

func parseTime(s string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

func itoa(n int) string { return strconv.Itoa(n) }

// owned reports whether r was created by the rollout of service at revision.
func owned(r *mesh.Resource, service string, revision int) bool {
	return r.Metadata.Labels[LabelService] == service && r.Metadata.Labels[LabelRevision] == itoa(revision)
}

// cloneSpec deep-copies a spec struct through JSON.
func cloneSpec[T any](p *T) *T {
	var c T
	b, err := json.Marshal(p)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil {
		panic("rollout: clone spec: " + err.Error())
	}
	return &c
}

// update returns a copy of r for a Commit put, keeping its resourceVersion
// (optimistic concurrency) and with spec replaced.
func update(r *mesh.Resource, spec any) *mesh.Resource {
	c := *r
	c.Status = nil
	c.Spec = spec
	if r.Metadata.Labels != nil {
		c.Metadata.Labels = make(map[string]string, len(r.Metadata.Labels))
		for k, v := range r.Metadata.Labels {
			c.Metadata.Labels[k] = v
		}
	}
	if c.APIVersion == "" {
		c.APIVersion = mesh.APIVersion
	}
	return &c
}
