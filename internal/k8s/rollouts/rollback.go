package rollouts

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// GVR is the Rollout's resource.
var GVR = v1alpha1.SchemeGroupVersion.WithResource("rollouts")

type revisionKey struct {
	revision int32
	version  string
}

// SetRevisionTemplate records tmpl, the pod template of the Deployment
// that ran revision (version), in the history entry of that revision, so
// that `gmesh rollback` can deploy it again (RollbackSpec). It reports
// whether an entry took it. FromStatus keeps recorded templates. The
// runtime calls it once the engine has written the entry (the stable
// Deployment's at the start, the new one's at the end).
func SetRevisionTemplate(st *v1alpha1.RolloutStatus, revision int32, version string, tmpl *corev1.PodTemplateSpec) (bool, error) {
	for i := range st.History {
		h := &st.History[i]
		if h.Revision != revision || h.Version != version {
			continue
		}
		t := tmpl.DeepCopy()
		// What the API server sets on a Deployment's template is not part
		// of the target.
		delete(t.Labels, "pod-template-hash")
		t.CreationTimestamp.Reset()
		b, err := json.Marshal(t)
		if err != nil {
			return false, err
		}
		h.Template = &runtime.RawExtension{Raw: b}
		return true, nil
	}
	return false, nil
}

// RunningDeployment is the Deployment that runs the serving version of a
// Rollout whose last revision ended, from its status: the new one after a
// success, else the stable one. "" when the status does not say (never
// begun): then spec.stableDeployment, or the runtime's adoption, applies.
func RunningDeployment(st *v1alpha1.RolloutStatus) string {
	switch mesh.Phase(st.Phase) {
	case mesh.PhaseSucceeded:
		return st.NewTaskSet
	case mesh.PhaseRolledBack, mesh.PhaseAborted, mesh.PhaseFailed:
		return st.OldTaskSet
	}
	return ""
}

// RollbackSpec returns the spec of the revision that deploys the history's
// previous entry again (`gmesh rollback`): ro's options (router, steps,
// interval, timeouts, gates), the previous entry's version, and its
// recorded pod template as a templatePatch that replaces the running pod
// template whole (so that an image, an env or anything else the later
// revision changed goes back), from the Deployment that runs now. The
// controls are cleared, force is off, and rollback is set. ro's last revision must have ended (the caller checks).
func RollbackSpec(ro *v1alpha1.Rollout) (*v1alpha1.RolloutSpec, *v1alpha1.RolloutRevision, error) {
	h := ro.Status.History
	if len(h) < 2 {
		return nil, nil, mesh.Errorf(mesh.ENotFound, "no earlier revision of %s to roll back to: its history has %d entries", ro.Name, len(h))
	}
	prev := h[len(h)-2]
	if prev.Template == nil || len(prev.Template.Raw) == 0 {
		return nil, nil, mesh.Errorf(mesh.EInvalid, "the history of %s does not record the pod template of version %s (revision %d), so it cannot be deployed again; deploy it with gmesh deploy %s --image IMAGE --version %s", ro.Name, prev.Version, prev.Revision, ro.Name, prev.Version)
	}
	var tmpl map[string]any
	if err := json.Unmarshal(prev.Template.Raw, &tmpl); err != nil {
		return nil, nil, fmt.Errorf("status.history[%d].template of %s: %w", len(h)-2, ro.Name, err)
	}
	patch := map[string]any{}
	for _, k := range []string{"metadata", "spec"} {
		m, _ := tmpl[k].(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		m["$patch"] = "replace"
		patch[k] = m
	}
	raw, err := json.Marshal(patch)
	if err != nil {
		return nil, nil, err
	}
	spec := ro.Spec.DeepCopy()
	spec.Version = prev.Version
	spec.Images = nil
	spec.TemplatePatch = &runtime.RawExtension{Raw: raw}
	spec.Replicas = nil
	if prev.Replicas > 0 {
		n := prev.Replicas
		spec.Replicas = &n
	}
	if d := RunningDeployment(&ro.Status); d != "" {
		spec.StableDeployment = d
	}
	spec.Force, spec.Rollback = false, true
	spec.Paused, spec.Abort, spec.Promote = false, false, false
	return spec, &prev, nil
}
