// Package v1beta2 holds the Kubernetes API types of App Mesh's controller
// (group appmesh.k8s.aws, version v1beta2) as gmesh serves them: Mesh,
// VirtualNode, VirtualRouter, VirtualService, VirtualGateway and
// GatewayRoute, with the same field names, JSON shapes and bounds as the
// retired App Mesh controller, so that its users' manifests apply unchanged.
//
// The spec types are the controller's; the status types are gmesh's own:
// conditions (Accepted, Translated, ACKed) with observedGeneration, the xDS
// clients' ACKs and last NACK, and the fields gmesh accepted but does not
// honour. The kubebuilder markers here generate the CRDs under
// deploy/kubernetes/crds (make generate): a structural schema with no
// preserved unknown fields, enums, bounds and CEL rules for App Mesh's
// cross-field rules, so that the API server refuses a bad manifest at
// admission with a message naming the field.
//
// +kubebuilder:object:generate=true
// +groupName=appmesh.k8s.aws
package v1beta2
