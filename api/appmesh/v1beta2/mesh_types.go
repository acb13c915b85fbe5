package v1beta2

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// EgressFilterType is a mesh's egress policy.
// +kubebuilder:validation:Enum=ALLOW_ALL;DROP_ALL
type EgressFilterType string

// Egress filter types.
const (
	// EgressFilterTypeAllowAll lets workloads reach anything.
	EgressFilterTypeAllowAll EgressFilterType = "ALLOW_ALL"
	// EgressFilterTypeDropAll lets workloads reach only the mesh's
	// virtual services.
	EgressFilterTypeDropAll EgressFilterType = "DROP_ALL"
)

// EgressFilter is a mesh's egress policy.
type EgressFilter struct {
	// Type is ALLOW_ALL or DROP_ALL.
	Type EgressFilterType `json:"type"`
}

// MeshServiceDiscovery is a mesh's service discovery preference.
type MeshServiceDiscovery struct {
	// IpPreference is IPv4_ONLY or IPv6_ONLY.
	// +kubebuilder:validation:Enum=IPv6_ONLY;IPv4_ONLY
	// +optional
	IpPreference *string `json:"ipPreference,omitempty"` //nolint:revive // App Mesh's spelling
}

// MeshSpec is a mesh: the namespaces it spans and its policies.
type MeshSpec struct {
	// AWSName is the mesh's name in the mesh model; default: the object's
	// name.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="awsName is immutable"
	// +kubebuilder:validation:MaxLength=255
	// +optional
	AWSName *string `json:"awsName,omitempty"`
	// NamespaceSelector selects the namespaces whose objects belong to the
	// mesh: empty selects every namespace, absent selects none.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// EgressFilter is the mesh's egress policy.
	// +optional
	EgressFilter *EgressFilter `json:"egressFilter,omitempty"`
	// MeshOwner is the AWS account that owned a shared mesh.
	// +optional
	MeshOwner *string `json:"meshOwner,omitempty"`
	// ServiceDiscovery holds the mesh's IP preference.
	// +optional
	ServiceDiscovery *MeshServiceDiscovery `json:"meshServiceDiscovery,omitempty"`
}

// MeshStatus is what gmesh reports about a mesh.
type MeshStatus struct {
	// MeshARN was App Mesh's; gmesh never sets it.
	// +optional
	MeshARN *string `json:"meshARN,omitempty"`

	GmeshStatus `json:",inline"`
}

// Mesh is App Mesh's mesh: the boundary of a set of virtual services,
// nodes, routers and gateways, spanning the namespaces it selects.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories={appmesh}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Accepted",type="string",JSONPath=".status.conditions[?(@.type=='Accepted')].status"
// +kubebuilder:printcolumn:name="Translated",type="string",JSONPath=".status.conditions[?(@.type=='Translated')].status"
// +kubebuilder:printcolumn:name="Egress",type="string",JSONPath=".spec.egressFilter.type"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type Mesh struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MeshSpec   `json:"spec,omitempty"`
	Status MeshStatus `json:"status,omitempty"`
}

// MeshList is a list of meshes.
//
// +kubebuilder:object:root=true
type MeshList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Mesh `json:"items"`
}
