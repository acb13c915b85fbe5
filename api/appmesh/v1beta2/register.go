package v1beta2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is App Mesh's API group.
const GroupName = "appmesh.k8s.aws"

// SchemeGroupVersion is the group and version of every type here.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1beta2"}

var (
	// SchemeBuilder registers the types of this package in a scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)
	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource returns the group-qualified resource for a plural name
// ("virtualnodes").
func Resource(plural string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(plural).GroupResource()
}

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(SchemeGroupVersion,
		&Mesh{}, &MeshList{},
		&VirtualNode{}, &VirtualNodeList{},
		&VirtualRouter{}, &VirtualRouterList{},
		&VirtualService{}, &VirtualServiceList{},
		&VirtualGateway{}, &VirtualGatewayList{},
		&GatewayRoute{}, &GatewayRouteList{},
	)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}
