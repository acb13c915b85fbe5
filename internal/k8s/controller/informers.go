package controller

import (
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
)

// KubeInformers is the Source's factory of core informers (Namespaces,
// Pods), for other parts of the control plane (the rollout runtime,
// internal/k8s/rolloutctl) to share its caches and watches: an informer
// obtained from it before Run is started by Run and stops with it. The
// pod informer keeps slim pods (identity, labels, deletion timestamp, IP,
// phase, conditions: no spec).
func (s *Source) KubeInformers() informers.SharedInformerFactory { return s.kubeFactory }

// DynamicInformers is the Source's factory of dynamic informers (the App
// Mesh kinds), shared the same way as KubeInformers.
func (s *Source) DynamicInformers() dynamicinformer.DynamicSharedInformerFactory {
	return s.dynFactory
}
