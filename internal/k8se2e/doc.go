// Package k8se2e holds the end-to-end tests of gmesh on a real Kubernetes
// cluster (the single-node cluster of internal/k8stest): install with
// `kubectl apply -k deploy/kubernetes`, the echo example from
// examples/kubernetes/echo, requests through the gateway's pods, pods and
// control-plane replicas deleted under load, and admission refusals. They
// need root and cgroup v1, like internal/k8stest; GMESH_K8S=off skips them
// on purpose.
package k8se2e
