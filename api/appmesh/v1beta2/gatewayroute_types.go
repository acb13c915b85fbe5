package v1beta2

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// GatewayRouteVirtualService is a gateway route's target service: exactly
// one of virtualServiceRef, virtualServiceARN.
// +kubebuilder:validation:XValidation:rule="has(self.virtualServiceRef) != has(self.virtualServiceARN)",message="exactly one of virtualServiceRef, virtualServiceARN must be set"
type GatewayRouteVirtualService struct {
	// VirtualServiceRef names a VirtualService object.
	// +optional
	VirtualServiceRef *VirtualServiceReference `json:"virtualServiceRef,omitempty"`
	// VirtualServiceARN names a virtual service by its App Mesh ARN.
	// +optional
	VirtualServiceARN *string `json:"virtualServiceARN,omitempty"`
}

// GatewayRouteTarget is where a gateway route sends requests.
type GatewayRouteTarget struct {
	// VirtualService is the target service.
	VirtualService GatewayRouteVirtualService `json:"virtualService"`
	// Port is the target service's provider port, for providers with
	// several listeners.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Port *int64 `json:"port,omitempty"`
}

// GatewayRouteHostnameMatch matches the request's host: exactly one of
// exact, suffix.
// +kubebuilder:validation:XValidation:rule="has(self.exact) != has(self.suffix)",message="exactly one of exact, suffix must be set"
type GatewayRouteHostnameMatch struct {
	// Exact matches the whole host name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Exact *string `json:"exact,omitempty"`
	// Suffix matches the end of the host name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Suffix *string `json:"suffix,omitempty"`
}

// GRPCGatewayRouteMetadata matches one metadata entry of a call.
type GRPCGatewayRouteMetadata struct {
	// Name of the metadata key.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=50
	Name *string `json:"name"`
	// Match is how the value is matched; absent: the key is present.
	// +optional
	Match *GRPCRouteMetadataMatchMethod `json:"match,omitempty"`
	// Invert matches calls that do not match.
	// +kubebuilder:default=false
	// +optional
	Invert *bool `json:"invert,omitempty"`
}

// GRPCGatewayRouteMatch selects gRPC calls: at least one of serviceName,
// hostname.
// +kubebuilder:validation:XValidation:rule="has(self.serviceName) || has(self.hostname)",message="at least one of serviceName, hostname must be set"
type GRPCGatewayRouteMatch struct {
	// ServiceName is the fully qualified gRPC service (package.Service).
	// +optional
	ServiceName *string `json:"serviceName,omitempty"`
	// Hostname matches the request's host.
	// +optional
	Hostname *GatewayRouteHostnameMatch `json:"hostname,omitempty"`
	// Metadata entries must all match.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	// +optional
	Metadata []GRPCGatewayRouteMetadata `json:"metadata,omitempty"`
	// Port is the gateway listener port the call came in on.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Port *int64 `json:"port,omitempty"`
}

// GatewayRouteHostnameRewrite turns the rewrite of the host to the target
// service's name on or off.
type GatewayRouteHostnameRewrite struct {
	// DefaultTargetHostname is ENABLED or DISABLED.
	// +kubebuilder:validation:Enum=ENABLED;DISABLED
	// +optional
	DefaultTargetHostname *string `json:"defaultTargetHostname,omitempty"`
}

// GrpcGatewayRouteRewrite rewrites a matched call.
type GrpcGatewayRouteRewrite struct { //nolint:revive // App Mesh's spelling
	// Hostname rewrites the host.
	// +optional
	Hostname *GatewayRouteHostnameRewrite `json:"hostname,omitempty"`
}

// GRPCGatewayRouteAction is where a gRPC gateway route sends calls.
type GRPCGatewayRouteAction struct {
	// Target is the virtual service.
	Target GatewayRouteTarget `json:"target"`
	// Rewrite rewrites the call.
	// +optional
	Rewrite *GrpcGatewayRouteRewrite `json:"rewrite,omitempty"`
}

// GRPCGatewayRoute is a gRPC gateway route.
type GRPCGatewayRoute struct {
	// Match selects calls.
	Match GRPCGatewayRouteMatch `json:"match"`
	// Action is where they go.
	Action GRPCGatewayRouteAction `json:"action"`
}

// HTTPGatewayRouteHeader matches one request header.
type HTTPGatewayRouteHeader struct {
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

// HTTPGatewayRouteMatch selects HTTP requests: at least one of prefix,
// path, hostname, and not both prefix and path.
// +kubebuilder:validation:XValidation:rule="has(self.prefix) || has(self.path) || has(self.hostname)",message="at least one of prefix, path, hostname must be set"
// +kubebuilder:validation:XValidation:rule="!(has(self.prefix) && has(self.path))",message="at most one of prefix, path may be set"
// +kubebuilder:validation:XValidation:rule="!has(self.prefix) || self.prefix.startsWith('/')",message="prefix must start with /",fieldPath=".prefix"
type HTTPGatewayRouteMatch struct {
	// Prefix matches the start of the path.
	// +optional
	Prefix *string `json:"prefix,omitempty"`
	// Path matches the whole path.
	// +optional
	Path *HTTPPathMatch `json:"path,omitempty"`
	// QueryParameters must all match.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	// +optional
	QueryParameters []HTTPQueryParameters `json:"queryParameters,omitempty"`
	// Method is the request method.
	// +kubebuilder:validation:Enum=CONNECT;DELETE;GET;HEAD;OPTIONS;PATCH;POST;PUT;TRACE
	// +optional
	Method *string `json:"method,omitempty"`
	// Hostname matches the request's host.
	// +optional
	Hostname *GatewayRouteHostnameMatch `json:"hostname,omitempty"`
	// Headers must all match.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=10
	// +optional
	Headers []HTTPGatewayRouteHeader `json:"headers,omitempty"`
	// Port is the gateway listener port the request came in on.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Port *int64 `json:"port,omitempty"`
}

// GatewayRoutePrefixRewrite rewrites the matched prefix: one of
// defaultPrefix, value.
// +kubebuilder:validation:XValidation:rule="!(has(self.defaultPrefix) && has(self.value))",message="at most one of defaultPrefix, value may be set"
// +kubebuilder:validation:XValidation:rule="!has(self.value) || (self.value.startsWith('/') && self.value.endsWith('/'))",message="value must start and end with /",fieldPath=".value"
type GatewayRoutePrefixRewrite struct {
	// DefaultPrefix is ENABLED (rewrite the prefix to /) or DISABLED.
	// +kubebuilder:validation:Enum=ENABLED;DISABLED
	// +optional
	DefaultPrefix *string `json:"defaultPrefix,omitempty"`
	// Value is the prefix that replaces the matched one.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Value *string `json:"value,omitempty"`
}

// GatewayRoutePathRewrite replaces the whole path.
type GatewayRoutePathRewrite struct {
	// Exact is the new path.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Exact *string `json:"exact,omitempty"`
}

// HTTPGatewayRouteRewrite rewrites a matched request: at least one of
// prefix, path, hostname, and not both prefix and path.
// +kubebuilder:validation:XValidation:rule="has(self.prefix) || has(self.path) || has(self.hostname)",message="at least one of prefix, path, hostname must be set"
// +kubebuilder:validation:XValidation:rule="!(has(self.prefix) && has(self.path))",message="at most one of prefix, path may be set"
type HTTPGatewayRouteRewrite struct {
	// Prefix rewrites the matched prefix.
	// +optional
	Prefix *GatewayRoutePrefixRewrite `json:"prefix,omitempty"`
	// Path replaces the whole path.
	// +optional
	Path *GatewayRoutePathRewrite `json:"path,omitempty"`
	// Hostname rewrites the host.
	// +optional
	Hostname *GatewayRouteHostnameRewrite `json:"hostname,omitempty"`
}

// HTTPGatewayRouteAction is where an HTTP gateway route sends requests.
type HTTPGatewayRouteAction struct {
	// Target is the virtual service.
	Target GatewayRouteTarget `json:"target"`
	// Rewrite rewrites the request.
	// +optional
	Rewrite *HTTPGatewayRouteRewrite `json:"rewrite,omitempty"`
}

// HTTPGatewayRoute is an HTTP or HTTP/2 gateway route.
type HTTPGatewayRoute struct {
	// Match selects requests.
	Match HTTPGatewayRouteMatch `json:"match"`
	// Action is where they go.
	Action HTTPGatewayRouteAction `json:"action"`
}

// GatewayRouteSpec is a gateway route: exactly one of grpcRoute,
// httpRoute, http2Route.
// +kubebuilder:validation:XValidation:rule="[has(self.grpcRoute), has(self.httpRoute), has(self.http2Route)].exists_one(x, x)",message="exactly one of grpcRoute, httpRoute, http2Route must be set"
type GatewayRouteSpec struct {
	// AWSName is the route's name in the mesh model; default:
	// NAME_NAMESPACE (gmesh spells it NAME.NAMESPACE).
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="awsName is immutable"
	// +kubebuilder:validation:MaxLength=255
	// +optional
	AWSName *string `json:"awsName,omitempty"`
	// Priority orders the gateway's routes: 0 is tried first, 1000 (the
	// default) last.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Priority *int64 `json:"priority,omitempty"`
	// GRPCRoute is a gRPC gateway route.
	// +optional
	GRPCRoute *GRPCGatewayRoute `json:"grpcRoute,omitempty"`
	// HTTPRoute is an HTTP/1 gateway route.
	// +optional
	HTTPRoute *HTTPGatewayRoute `json:"httpRoute,omitempty"`
	// HTTP2Route is an HTTP/2 gateway route.
	// +optional
	HTTP2Route *HTTPGatewayRoute `json:"http2Route,omitempty"`
	// VirtualGatewayRef names the route's VirtualGateway; default: the
	// gateway whose namespace and gateway route selectors select it.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="virtualGatewayRef is immutable"
	// +optional
	VirtualGatewayRef *VirtualGatewayReference `json:"virtualGatewayRef,omitempty"`
	// MeshRef names the route's Mesh; default: its gateway's.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="meshRef is immutable"
	// +optional
	MeshRef *MeshReference `json:"meshRef,omitempty"`
}

// GatewayRouteStatus is what gmesh reports about a gateway route.
type GatewayRouteStatus struct {
	// GatewayRouteARN was App Mesh's; gmesh never sets it.
	// +optional
	GatewayRouteARN *string `json:"gatewayRouteARN,omitempty"`

	GmeshStatus `json:",inline"`

	// VirtualGateway is the gmesh name of the gateway the route attached
	// to.
	// +optional
	VirtualGateway string `json:"virtualGateway,omitempty"`
}

// GatewayRoute is App Mesh's gateway route.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories={all,appmesh}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Mesh",type="string",JSONPath=".status.mesh"
// +kubebuilder:printcolumn:name="Gateway",type="string",JSONPath=".status.virtualGateway"
// +kubebuilder:printcolumn:name="Accepted",type="string",JSONPath=".status.conditions[?(@.type=='Accepted')].status"
// +kubebuilder:printcolumn:name="Translated",type="string",JSONPath=".status.conditions[?(@.type=='Translated')].status"
// +kubebuilder:printcolumn:name="ACKed",type="integer",JSONPath=".status.clients.acked"
// +kubebuilder:printcolumn:name="Gmesh-Name",type="string",JSONPath=".status.gmeshName",priority=1
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type GatewayRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   GatewayRouteSpec   `json:"spec,omitempty"`
	Status GatewayRouteStatus `json:"status,omitempty"`
}

// GatewayRouteList is a list of gateway routes.
//
// +kubebuilder:object:root=true
type GatewayRouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GatewayRoute `json:"items"`
}
