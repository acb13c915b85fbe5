// Package v1alpha1 holds gmesh's own Kubernetes API types (group
// gmesh.dev, version v1alpha1): the Rollout, which asks gmesh's rollout
// engine (internal/rollout, the one `gmesh deploy` runs locally) to move a
// VirtualRouter's route from a stable Deployment to a new version step by
// step, gated on health, ACKs and analysis, as `gmesh deploy` does.
//
// The kubebuilder markers here generate the CRD under deploy/kubernetes/crds
// (make generate): a structural schema, bounds, and CEL rules for what one
// object can check (steps ascending and ending at 100, the ACK timeout
// within the timeout, exactly one way to say the new version), each
// refusal naming the field. Conversion to and from the engine's
// mesh.RolloutSpec and mesh.RolloutStatus is internal/k8s/rollouts.
//
// +kubebuilder:object:generate=true
// +groupName=gmesh.dev
package v1alpha1
