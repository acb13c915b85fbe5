package v1beta2

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// VirtualNodeServiceProvider is a virtual node that provides a service:
// exactly one of virtualNodeRef, virtualNodeARN.
// +kubebuilder:validation:XValidation:rule="has(self.virtualNodeRef) != has(self.virtualNodeARN)",message="exactly one of virtualNodeRef, virtualNodeARN must be set"
type VirtualNodeServiceProvider struct {
	// VirtualNodeRef names a VirtualNode object.
	// +optional
	VirtualNodeRef *VirtualNodeReference `json:"virtualNodeRef,omitempty"`
	// VirtualNodeARN names a virtual node by its App Mesh ARN.
	// +optional
	VirtualNodeARN *string `json:"virtualNodeARN,omitempty"`
}

// VirtualRouterServiceProvider is a virtual router that provides a
// service: exactly one of virtualRouterRef, virtualRouterARN.
// +kubebuilder:validation:XValidation:rule="has(self.virtualRouterRef) != has(self.virtualRouterARN)",message="exactly one of virtualRouterRef, virtualRouterARN must be set"
type VirtualRouterServiceProvider struct {
	// VirtualRouterRef names a VirtualRouter object.
	// +optional
	VirtualRouterRef *VirtualRouterReference `json:"virtualRouterRef,omitempty"`
	// VirtualRouterARN names a virtual router by its App Mesh ARN.
	// +optional
	VirtualRouterARN *string `json:"virtualRouterARN,omitempty"`
}

// VirtualServiceProvider is what serves a virtual service: exactly one of
// virtualNode, virtualRouter.
// +kubebuilder:validation:XValidation:rule="has(self.virtualNode) != has(self.virtualRouter)",message="exactly one of virtualNode, virtualRouter must be set"
type VirtualServiceProvider struct {
	// VirtualNode is a single node.
	// +optional
	VirtualNode *VirtualNodeServiceProvider `json:"virtualNode,omitempty"`
	// VirtualRouter is a router that splits traffic across nodes.
	// +optional
	VirtualRouter *VirtualRouterServiceProvider `json:"virtualRouter,omitempty"`
}

// VirtualServiceSpec is a virtual service: the name clients dial.
type VirtualServiceSpec struct {
	// AWSName is the service's name, the one clients dial
	// (xds:///AWSNAME); default: NAME.NAMESPACE.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="awsName is immutable"
	// +kubebuilder:validation:MaxLength=255
	// +optional
	AWSName *string `json:"awsName,omitempty"`
	// Provider serves the service.
	// +optional
	Provider *VirtualServiceProvider `json:"provider,omitempty"`
	// MeshRef names the service's Mesh; default: the Mesh whose namespace
	// selector selects the service's namespace.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="meshRef is immutable"
	// +optional
	MeshRef *MeshReference `json:"meshRef,omitempty"`
}

// VirtualServiceStatus is what gmesh reports about a virtual service.
type VirtualServiceStatus struct {
	// VirtualServiceARN was App Mesh's; gmesh never sets it.
	// +optional
	VirtualServiceARN *string `json:"virtualServiceARN,omitempty"`

	GmeshStatus `json:",inline"`
}

// VirtualService is App Mesh's virtual service.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories={all,appmesh}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Mesh",type="string",JSONPath=".status.mesh"
// +kubebuilder:printcolumn:name="Dial-Name",type="string",JSONPath=".status.gmeshName"
// +kubebuilder:printcolumn:name="Accepted",type="string",JSONPath=".status.conditions[?(@.type=='Accepted')].status"
// +kubebuilder:printcolumn:name="Translated",type="string",JSONPath=".status.conditions[?(@.type=='Translated')].status"
// +kubebuilder:printcolumn:name="ACKed",type="integer",JSONPath=".status.clients.acked"
// +kubebuilder:printcolumn:name="Clients",type="integer",JSONPath=".status.clients.total"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type VirtualService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualServiceSpec   `json:"spec,omitempty"`
	Status VirtualServiceStatus `json:"status,omitempty"`
}

// VirtualServiceList is a list of virtual services.
//
// +kubebuilder:object:root=true
type VirtualServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualService `json:"items"`
}
