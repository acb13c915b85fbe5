// Package examples tests the Kubernetes examples under examples/kubernetes:
// each is rendered as `kubectl apply -k` would (kustomize's krusty), its
// App Mesh objects are decoded strictly and converted as the control plane
// and the gateway pods do, and it is run in-process on a fake cluster with
// real echo servers and clients, so an example cannot drift from the
// fields the CRDs accept, from the names clients dial, or from the reply
// the docs promise. It has no code of its own.
package examples
