package v1beta2

import "k8s.io/apimachinery/pkg/types"

// DurationUnit is the unit of a Duration.
// +kubebuilder:validation:Enum=s;ms
type DurationUnit string

// Duration units.
const (
	DurationUnitS  DurationUnit = "s"
	DurationUnitMS DurationUnit = "ms"
)

// Duration is App Mesh's {value, unit} span of time.
type Duration struct {
	// Unit is s or ms.
	Unit DurationUnit `json:"unit"`
	// Value is the number of units.
	// +kubebuilder:validation:Minimum=0
	Value int64 `json:"value"`
}

// MatchRange is an integer range [start, end) a header value must fall in.
// +kubebuilder:validation:XValidation:rule="self.end > self.start",message="end must be greater than start"
type MatchRange struct {
	// Start is the first value of the range.
	Start int64 `json:"start"`
	// End is the first value past the range.
	End int64 `json:"end"`
}

// HeaderMatchMethod is how an HTTP header's value is matched: exactly one
// of exact, prefix, range, regex, suffix.
// +kubebuilder:validation:XValidation:rule="[has(self.exact), has(self.prefix), has(self.range), has(self.regex), has(self.suffix)].exists_one(x, x)",message="exactly one of exact, prefix, range, regex, suffix must be set"
type HeaderMatchMethod struct {
	// Exact matches the whole value.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Exact *string `json:"exact,omitempty"`
	// Prefix matches the start of the value.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Prefix *string `json:"prefix,omitempty"`
	// Range matches an integer value in [start, end).
	// +optional
	Range *MatchRange `json:"range,omitempty"`
	// Regex matches the value against a regular expression.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Regex *string `json:"regex,omitempty"`
	// Suffix matches the end of the value.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Suffix *string `json:"suffix,omitempty"`
}

// GRPCRouteMetadataMatchMethod is how a gRPC metadata value is matched:
// exactly one of exact, prefix, range, regex, suffix.
// +kubebuilder:validation:XValidation:rule="[has(self.exact), has(self.prefix), has(self.range), has(self.regex), has(self.suffix)].exists_one(x, x)",message="exactly one of exact, prefix, range, regex, suffix must be set"
type GRPCRouteMetadataMatchMethod struct {
	// Exact matches the whole value.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Exact *string `json:"exact,omitempty"`
	// Prefix matches the start of the value.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Prefix *string `json:"prefix,omitempty"`
	// Range matches an integer value in [start, end).
	// +optional
	Range *MatchRange `json:"range,omitempty"`
	// Regex matches the value against a regular expression.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Regex *string `json:"regex,omitempty"`
	// Suffix matches the end of the value.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Suffix *string `json:"suffix,omitempty"`
}

// PortNumber is a TCP port.
// +kubebuilder:validation:Minimum=1
// +kubebuilder:validation:Maximum=65535
type PortNumber int64

// PortProtocol is a listener's protocol.
// +kubebuilder:validation:Enum=grpc;http;http2;tcp
type PortProtocol string

// Port protocols.
const (
	PortProtocolGRPC  PortProtocol = "grpc"
	PortProtocolHTTP  PortProtocol = "http"
	PortProtocolHTTP2 PortProtocol = "http2"
	PortProtocolTCP   PortProtocol = "tcp"
)

// PortMapping is a listener's port and protocol.
type PortMapping struct {
	// Port is the port the listener receives on.
	Port PortNumber `json:"port"`
	// Protocol is grpc, http, http2 or tcp.
	Protocol PortProtocol `json:"protocol"`
}

// VirtualNodeReference names a VirtualNode object.
type VirtualNodeReference struct {
	// Namespace of the VirtualNode; default: the referring object's.
	// +optional
	Namespace *string `json:"namespace,omitempty"`
	// Name of the VirtualNode.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// VirtualServiceReference names a VirtualService object.
type VirtualServiceReference struct {
	// Namespace of the VirtualService; default: the referring object's.
	// +optional
	Namespace *string `json:"namespace,omitempty"`
	// Name of the VirtualService.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// VirtualRouterReference names a VirtualRouter object.
type VirtualRouterReference struct {
	// Namespace of the VirtualRouter; default: the referring object's.
	// +optional
	Namespace *string `json:"namespace,omitempty"`
	// Name of the VirtualRouter.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// MeshReference names the Mesh an object belongs to. App Mesh's admission
// webhook filled it in from the meshes' namespace selectors; gmesh accepts
// it as written (manifests exported from a cluster carry it) and otherwise
// works membership out from the namespace selectors itself.
type MeshReference struct {
	// Name of the Mesh object.
	Name string `json:"name"`
	// UID of the Mesh object.
	UID types.UID `json:"uid"`
}

// VirtualGatewayReference names the VirtualGateway a GatewayRoute belongs
// to; like MeshReference, App Mesh's webhook filled it in.
type VirtualGatewayReference struct {
	// Namespace of the VirtualGateway; default: the GatewayRoute's.
	// +optional
	Namespace *string `json:"namespace,omitempty"`
	// Name of the VirtualGateway.
	Name string `json:"name"`
	// UID of the VirtualGateway.
	UID types.UID `json:"uid"`
}

// HTTPPathMatch matches a request's whole path: exactly one of exact,
// regex.
// +kubebuilder:validation:XValidation:rule="has(self.exact) != has(self.regex)",message="exactly one of exact, regex must be set"
type HTTPPathMatch struct {
	// Exact matches the whole path.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Exact *string `json:"exact,omitempty"`
	// Regex matches the path against a regular expression.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +optional
	Regex *string `json:"regex,omitempty"`
}

// HTTPQueryParameters matches one query parameter.
type HTTPQueryParameters struct {
	// Name of the query parameter.
	Name *string `json:"name"`
	// Match is how its value is matched; absent: the parameter is present.
	// +optional
	Match *QueryMatchMethod `json:"match,omitempty"`
}

// QueryMatchMethod is how a query parameter's value is matched.
// +kubebuilder:validation:XValidation:rule="has(self.exact)",message="exact is required in a query parameter match (leave match out to match any value)"
type QueryMatchMethod struct {
	// Exact matches the whole value.
	// +optional
	Exact *string `json:"exact,omitempty"`
}

// HTTPTimeout is an HTTP or HTTP/2 timeout.
type HTTPTimeout struct {
	// PerRequest bounds one request.
	// +optional
	PerRequest *Duration `json:"perRequest,omitempty"`
	// Idle bounds the time a connection may stay idle.
	// +optional
	Idle *Duration `json:"idle,omitempty"`
}

// GRPCTimeout is a gRPC timeout.
type GRPCTimeout struct {
	// PerRequest bounds one call.
	// +optional
	PerRequest *Duration `json:"perRequest,omitempty"`
	// Idle bounds the time a stream may stay idle.
	// +optional
	Idle *Duration `json:"idle,omitempty"`
}

// TCPTimeout is a TCP timeout.
type TCPTimeout struct {
	// Idle bounds the time a connection may stay idle.
	// +optional
	Idle *Duration `json:"idle,omitempty"`
}

// TCPConnectionPool limits TCP connections (an Envoy setting).
type TCPConnectionPool struct {
	// MaxConnections is the most connections to all upstream hosts.
	// +kubebuilder:validation:Minimum=1
	MaxConnections int64 `json:"maxConnections"`
}

// HTTPConnectionPool limits HTTP/1 connections (an Envoy setting).
type HTTPConnectionPool struct {
	// MaxConnections is the most connections to all upstream hosts.
	// +kubebuilder:validation:Minimum=1
	MaxConnections int64 `json:"maxConnections"`
	// MaxPendingRequests is the most requests queued past MaxConnections.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxPendingRequests *int64 `json:"maxPendingRequests,omitempty"`
}

// HTTP2ConnectionPool limits concurrent HTTP/2 requests (an Envoy setting).
type HTTP2ConnectionPool struct {
	// MaxRequests is the most requests in flight to all upstream hosts.
	// +kubebuilder:validation:Minimum=1
	MaxRequests int64 `json:"maxRequests"`
}

// GRPCConnectionPool limits concurrent gRPC calls (an Envoy setting).
type GRPCConnectionPool struct {
	// MaxRequests is the most calls in flight to all upstream hosts.
	// +kubebuilder:validation:Minimum=1
	MaxRequests int64 `json:"maxRequests"`
}

// SubjectAlternativeNameMatchers lists accepted subject alternative names.
type SubjectAlternativeNameMatchers struct {
	// Exact lists names that match exactly.
	Exact []*string `json:"exact"`
}

// SubjectAlternativeNames restricts a peer certificate's SANs.
type SubjectAlternativeNames struct {
	// Match lists the accepted names.
	Match *SubjectAlternativeNameMatchers `json:"match"`
}

// IP preferences of a mesh's service discovery.
const (
	IpPreferenceIPv4 string = "IPv4_ONLY" //nolint:revive // App Mesh's spelling
	IpPreferenceIPv6 string = "IPv6_ONLY" //nolint:revive // App Mesh's spelling
)
