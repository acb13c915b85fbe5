package v1beta2

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// VirtualRouterListener is a virtual router's port.
type VirtualRouterListener struct {
	// PortMapping is the port and protocol.
	PortMapping PortMapping `json:"portMapping"`
}

// WeightedTarget is a virtual node and its share of a route's traffic:
// exactly one of virtualNodeRef, virtualNodeARN.
// +kubebuilder:validation:XValidation:rule="has(self.virtualNodeRef) != has(self.virtualNodeARN)",message="exactly one of virtualNodeRef, virtualNodeARN must be set"
type WeightedTarget struct {
	// VirtualNodeRef names a VirtualNode object.
	// +optional
	VirtualNodeRef *VirtualNodeReference `json:"virtualNodeRef,omitempty"`
	// VirtualNodeARN names a virtual node by its App Mesh ARN
	// (arn:aws:appmesh:REGION:ACCOUNT:mesh/MESH/virtualNode/NAME).
	// +optional
	VirtualNodeARN *string `json:"virtualNodeARN,omitempty"`
	// Weight is the target's relative weight, 0..100.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	Weight int64 `json:"weight"`
	// Port is the target node's listener port, for nodes with several.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Port *int64 `json:"port,omitempty"`
}

// HTTPRouteHeader matches one request header.
type HTTPRouteHeader struct {
	// Name of the header.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=50
	Name string `json:"name"`
	// Match is how the value is matched; absent: the header is present.
	// +optional
	Match *HeaderMatchMethod `json:"match,omitempty"`
	// Invert matches requests that do not match.
	// +kubebuilder:default=false
	// +optional
	Invert *bool `json:"invert,omitempty"`
}

// HTTPRouteMatch selects HTTP requests: exactly one of prefix, path.
// +kubebuilder:validation:XValidation:rule="has(self.prefix) != has(self.path)",message="exactly one of prefix, path must be set"
type HTTPRouteMatch struct {
	// Headers must all match.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	// +optional
	Headers []HTTPRouteHeader `json:"headers,omitempty"`
	// Method is the request method.
	// +kubebuilder:validation:Enum=CONNECT;DELETE;GET;HEAD;OPTIONS;PATCH;POST;PUT;TRACE
	// +optional
	Method *string `json:"method,omitempty"`
	// Prefix matches the start of the path.
	// +optional
	Prefix *string `json:"prefix,omitempty"`
	// Scheme is http or https.
	// +kubebuilder:validation:Enum=http;https
	// +optional
	Scheme *string `json:"scheme,omitempty"`
	// Path matches the whole path.
	// +optional
	Path *HTTPPathMatch `json:"path,omitempty"`
	// QueryParameters must all match.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	// +optional
	QueryParameters []HTTPQueryParameters `json:"queryParameters,omitempty"`
	// Port is the router listener port the request came in on.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Port *int64 `json:"port,omitempty"`
}

// HTTPRouteAction splits traffic across weighted targets.
// +kubebuilder:validation:XValidation:rule="self.weightedTargets.exists(t, t.weight > 0)",message="at least one weighted target needs a weight above 0"
type HTTPRouteAction struct {
	// WeightedTargets are the virtual nodes and their weights.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	WeightedTargets []WeightedTarget `json:"weightedTargets"`
}

// HTTPRetryPolicyEvent is an HTTP condition that triggers a retry.
// +kubebuilder:validation:Enum=server-error;gateway-error;client-error;stream-error
type HTTPRetryPolicyEvent string

// TCPRetryPolicyEvent is a TCP condition that triggers a retry.
// +kubebuilder:validation:Enum=connection-error
type TCPRetryPolicyEvent string

// GRPCRetryPolicyEvent is a gRPC status that triggers a retry.
// +kubebuilder:validation:Enum=cancelled;deadline-exceeded;internal;resource-exhausted;unavailable
type GRPCRetryPolicyEvent string

// HTTPRetryPolicy is an HTTP route's retry policy.
// +kubebuilder:validation:XValidation:rule="has(self.httpRetryEvents) || has(self.tcpRetryEvents)",message="at least one of httpRetryEvents, tcpRetryEvents is required"
type HTTPRetryPolicy struct {
	// HTTPRetryEvents are the HTTP conditions that trigger a retry.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=25
	// +optional
	HTTPRetryEvents []HTTPRetryPolicyEvent `json:"httpRetryEvents,omitempty"`
	// TCPRetryEvents are the TCP conditions that trigger a retry.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1
	// +optional
	TCPRetryEvents []TCPRetryPolicyEvent `json:"tcpRetryEvents,omitempty"`
	// MaxRetries is the most retries of one request.
	// +kubebuilder:validation:Minimum=0
	MaxRetries int64 `json:"maxRetries"`
	// PerRetryTimeout bounds each try.
	PerRetryTimeout Duration `json:"perRetryTimeout"`
}

// HTTPRoute is an HTTP or HTTP/2 route.
type HTTPRoute struct {
	// Match selects requests.
	Match HTTPRouteMatch `json:"match"`
	// Action is where they go.
	Action HTTPRouteAction `json:"action"`
	// RetryPolicy retries failed requests.
	// +optional
	RetryPolicy *HTTPRetryPolicy `json:"retryPolicy,omitempty"`
	// Timeout bounds requests.
	// +optional
	Timeout *HTTPTimeout `json:"timeout,omitempty"`
}

// TCPRouteAction splits connections across weighted targets.
// +kubebuilder:validation:XValidation:rule="self.weightedTargets.exists(t, t.weight > 0)",message="at least one weighted target needs a weight above 0"
type TCPRouteAction struct {
	// WeightedTargets are the virtual nodes and their weights.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	WeightedTargets []WeightedTarget `json:"weightedTargets"`
}

// TCPRoute is a TCP route.
type TCPRoute struct {
	// Match selects connections.
	// +optional
	Match *TCPRouteMatch `json:"match,omitempty"`
	// Action is where they go.
	Action TCPRouteAction `json:"action"`
	// Timeout bounds idle connections.
	// +optional
	Timeout *TCPTimeout `json:"timeout,omitempty"`
}

// TCPRouteMatch selects TCP connections.
type TCPRouteMatch struct {
	// Port is the router listener port the connection came in on.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Port *int64 `json:"port,omitempty"`
}

// GRPCRouteMetadata matches one metadata entry of a call.
type GRPCRouteMetadata struct {
	// Name of the metadata key.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=50
	Name string `json:"name"`
	// Match is how the value is matched; absent: the key is present.
	// +optional
	Match *GRPCRouteMetadataMatchMethod `json:"match,omitempty"`
	// Invert matches calls that do not match.
	// +kubebuilder:default=false
	// +optional
	Invert *bool `json:"invert,omitempty"`
}

// GRPCRouteMatch selects gRPC calls.
// +kubebuilder:validation:XValidation:rule="!has(self.methodName) || has(self.serviceName)",message="methodName needs serviceName",fieldPath=".methodName"
type GRPCRouteMatch struct {
	// MethodName is the called method; needs serviceName.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=50
	// +optional
	MethodName *string `json:"methodName,omitempty"`
	// ServiceName is the fully qualified gRPC service
	// (package.Service).
	// +optional
	ServiceName *string `json:"serviceName,omitempty"`
	// Metadata entries must all match.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	// +optional
	Metadata []GRPCRouteMetadata `json:"metadata,omitempty"`
	// Port is the router listener port the call came in on.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Port *int64 `json:"port,omitempty"`
}

// GRPCRouteAction splits calls across weighted targets.
// +kubebuilder:validation:XValidation:rule="self.weightedTargets.exists(t, t.weight > 0)",message="at least one weighted target needs a weight above 0"
type GRPCRouteAction struct {
	// WeightedTargets are the virtual nodes and their weights.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	WeightedTargets []WeightedTarget `json:"weightedTargets"`
}

// GRPCRetryPolicy is a gRPC route's retry policy.
// +kubebuilder:validation:XValidation:rule="has(self.grpcRetryEvents) || has(self.httpRetryEvents) || has(self.tcpRetryEvents)",message="at least one of grpcRetryEvents, httpRetryEvents, tcpRetryEvents is required"
type GRPCRetryPolicy struct {
	// GRPCRetryEvents are the gRPC statuses that trigger a retry.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=5
	// +optional
	GRPCRetryEvents []GRPCRetryPolicyEvent `json:"grpcRetryEvents,omitempty"`
	// HTTPRetryEvents are the HTTP conditions that trigger a retry.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=25
	// +optional
	HTTPRetryEvents []HTTPRetryPolicyEvent `json:"httpRetryEvents,omitempty"`
	// TCPRetryEvents are the TCP conditions that trigger a retry.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1
	// +optional
	TCPRetryEvents []TCPRetryPolicyEvent `json:"tcpRetryEvents,omitempty"`
	// MaxRetries is the most retries of one call.
	// +kubebuilder:validation:Minimum=0
	MaxRetries int64 `json:"maxRetries"`
	// PerRetryTimeout bounds each try.
	PerRetryTimeout Duration `json:"perRetryTimeout"`
}

// GRPCRoute is a gRPC route.
type GRPCRoute struct {
	// Match selects calls.
	Match GRPCRouteMatch `json:"match"`
	// Action is where they go.
	Action GRPCRouteAction `json:"action"`
	// RetryPolicy retries failed calls.
	// +optional
	RetryPolicy *GRPCRetryPolicy `json:"retryPolicy,omitempty"`
	// Timeout bounds calls.
	// +optional
	Timeout *GRPCTimeout `json:"timeout,omitempty"`
}

// Route is one route of a virtual router: exactly one of grpcRoute,
// httpRoute, http2Route, tcpRoute.
// +kubebuilder:validation:XValidation:rule="[has(self.grpcRoute), has(self.httpRoute), has(self.http2Route), has(self.tcpRoute)].exists_one(x, x)",message="exactly one of grpcRoute, httpRoute, http2Route, tcpRoute must be set"
type Route struct {
	// Name of the route, unique in its router.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	Name string `json:"name"`
	// GRPCRoute is a gRPC route.
	// +optional
	GRPCRoute *GRPCRoute `json:"grpcRoute,omitempty"`
	// HTTPRoute is an HTTP/1 route.
	// +optional
	HTTPRoute *HTTPRoute `json:"httpRoute,omitempty"`
	// HTTP2Route is an HTTP/2 route.
	// +optional
	HTTP2Route *HTTPRoute `json:"http2Route,omitempty"`
	// TCPRoute is a TCP route.
	// +optional
	TCPRoute *TCPRoute `json:"tcpRoute,omitempty"`
	// Priority orders the routes: 0 is tried first, 1000 last.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Priority *int64 `json:"priority,omitempty"`
}

// VirtualRouterSpec is a virtual router and its routes.
type VirtualRouterSpec struct {
	// AWSName is the router's name in the mesh model; default:
	// NAME_NAMESPACE (gmesh spells it NAME.NAMESPACE).
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="awsName is immutable"
	// +kubebuilder:validation:MaxLength=255
	// +optional
	AWSName *string `json:"awsName,omitempty"`
	// Listeners are the router's ports.
	// +kubebuilder:validation:MinItems=1
	Listeners []VirtualRouterListener `json:"listeners,omitempty"`
	// Routes are the router's routes; names are unique. (App Mesh's quota
	// was 50 routes a router; the bound keeps the CEL rules' cost within
	// the API server's budget.)
	// +kubebuilder:validation:MaxItems=100
	// +listType=map
	// +listMapKey=name
	// +optional
	Routes []Route `json:"routes,omitempty"`
	// MeshRef names the router's Mesh; default: the Mesh whose namespace
	// selector selects the router's namespace.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="meshRef is immutable"
	// +optional
	MeshRef *MeshReference `json:"meshRef,omitempty"`
}

// VirtualRouterStatus is what gmesh reports about a virtual router.
type VirtualRouterStatus struct {
	// VirtualRouterARN was App Mesh's; gmesh never sets it.
	// +optional
	VirtualRouterARN *string `json:"virtualRouterARN,omitempty"`
	// RouteARNs were App Mesh's; gmesh never sets them.
	// +optional
	RouteARNs map[string]string `json:"routeARNs,omitempty"`

	GmeshStatus `json:",inline"`

	// Routes are the gmesh names of the routes that were accepted, by
	// route name.
	// +optional
	Routes map[string]string `json:"routes,omitempty"`
}

// VirtualRouter is App Mesh's virtual router with its routes inline.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories={all,appmesh}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Mesh",type="string",JSONPath=".status.mesh"
// +kubebuilder:printcolumn:name="Accepted",type="string",JSONPath=".status.conditions[?(@.type=='Accepted')].status"
// +kubebuilder:printcolumn:name="Translated",type="string",JSONPath=".status.conditions[?(@.type=='Translated')].status"
// +kubebuilder:printcolumn:name="ACKed",type="integer",JSONPath=".status.clients.acked"
// +kubebuilder:printcolumn:name="Clients",type="integer",JSONPath=".status.clients.total"
// +kubebuilder:printcolumn:name="Gmesh-Name",type="string",JSONPath=".status.gmeshName",priority=1
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type VirtualRouter struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualRouterSpec   `json:"spec,omitempty"`
	Status VirtualRouterStatus `json:"status,omitempty"`
}

// VirtualRouterList is a list of virtual routers.
//
// +kubebuilder:object:root=true
type VirtualRouterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualRouter `json:"items"`
}
