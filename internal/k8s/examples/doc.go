// Package examples tests the Kubernetes examples under examples/kubernetes:
// each is rendered as `kubectl apply -k` would (kustomize's krusty) and its
// App Mesh objects are decoded strictly and converted as the control plane
// and the gateway pods do, so an example cannot drift from the fields the
// CRDs accept or from the names clients dial. It has no code of its own.
package examples
