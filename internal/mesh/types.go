// Package mesh is gmesh's domain: the App Mesh resource model (Mesh,
// VirtualNode, VirtualRouter, Route, VirtualService, VirtualGateway,
// GatewayRoute), gmesh's own runtime kinds (Service, TaskSet, Rollout), the
// registry's Endpoint, and the error kinds every other package speaks.
//
// It imports nothing else of gmesh's. Field names and JSON shapes follow App
// Mesh's API so that existing manifests and habits carry over.
package mesh

import (
	"encoding/json"
	"slices"
)

// APIVersion is the apiVersion every gmesh manifest document carries.
const APIVersion = "gmesh.dev/v1"

// Kind names a resource type, spelled as in manifests ("VirtualNode").
type Kind string

// The resource kinds. The first seven are App Mesh's; Service, TaskSet and
// Rollout are gmesh's ECS-like runtime kinds.
const (
	KindMesh           Kind = "Mesh"
	KindVirtualNode    Kind = "VirtualNode"
	KindVirtualRouter  Kind = "VirtualRouter"
	KindRoute          Kind = "Route"
	KindVirtualService Kind = "VirtualService"
	KindVirtualGateway Kind = "VirtualGateway"
	KindGatewayRoute   Kind = "GatewayRoute"
	KindService        Kind = "Service"
	KindTaskSet        Kind = "TaskSet"
	KindRollout        Kind = "Rollout"
)

// Kinds lists every kind in dependency order: a kind may refer only to kinds
// before it (apply creates in this order, delete removes in reverse).
var Kinds = []Kind{
	KindMesh, KindVirtualNode, KindVirtualRouter, KindRoute, KindVirtualService,
	KindVirtualGateway, KindGatewayRoute, KindService, KindTaskSet, KindRollout,
}

// Metadata identifies a resource. Name is unique per (kind, mesh); a Mesh has
// no mesh of its own.
type Metadata struct {
	Name string `json:"name"`
	Mesh string `json:"mesh,omitempty"`
	// ResourceVersion is set by the store on every write. A write that carries
	// a non-empty ResourceVersion is refused with ErrConflict unless it matches
	// the stored one (optimistic concurrency); an empty one means "whatever is
	// stored" (last writer wins, as kubectl apply without a version).
	ResourceVersion string            `json:"resourceVersion,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	// CreatedAt and UpdatedAt are RFC 3339 timestamps set by the store.
	CreatedAt string `json:"createdAt,omitempty"`
	UpdatedAt string `json:"updatedAt,omitempty"`
}

// Resource is one manifest document: {apiVersion, kind, metadata, spec}.
// Spec holds the kind's spec type as a pointer (*VirtualNodeSpec for a
// VirtualNode, and so on); use the typed accessors or a type switch.
type Resource struct {
	APIVersion string   `json:"apiVersion"`
	Kind       Kind     `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       any      `json:"spec"`
	// Status is written by gmesh only (rollout progress); apply ignores it.
	Status any `json:"status,omitempty"`
	// Source is where the resource was decoded from, for error messages
	// (set by Decode, or by an API that knows the file). It is never encoded
	// or stored.
	Source *Source `json:"-"`
}

// Ref is the identity of a resource.
type Ref struct {
	Kind Kind   `json:"kind"`
	Mesh string `json:"mesh,omitempty"`
	Name string `json:"name"`
}

// Ref returns r's identity.
func (r *Resource) Ref() Ref {
	return Ref{Kind: r.Kind, Mesh: r.Metadata.Mesh, Name: r.Metadata.Name}
}

func (r Ref) String() string {
	if r.Mesh == "" {
		return string(r.Kind) + "/" + r.Name
	}
	return string(r.Kind) + "/" + r.Mesh + "/" + r.Name
}

// ---- Mesh ----

// MeshSpec is a mesh's spec.
type MeshSpec struct {
	EgressFilter *EgressFilter `json:"egressFilter,omitempty"`
}

// EgressFilter is App Mesh's egress filter; gmesh stores it (type
// DROP_ALL or ALLOW_ALL) and applies DROP_ALL semantics to proxyless clients
// by serving only declared virtual services.
type EgressFilter struct {
	Type string `json:"type"`
}

// ---- VirtualNode ----

// VirtualNodeSpec is a virtual node: one version of one service.
type VirtualNodeSpec struct {
	Listeners        []Listener        `json:"listeners,omitempty"`
	ServiceDiscovery *ServiceDiscovery `json:"serviceDiscovery,omitempty"`
	Backends         []Backend         `json:"backends,omitempty"`
	// BackendDefaults is the client policy of every backend that has none
	// of its own.
	BackendDefaults *BackendDefaults `json:"backendDefaults,omitempty"`
}

// Listener is a virtual node's or gateway's listener.
type Listener struct {
	PortMapping      PortMapping       `json:"portMapping"`
	HealthCheck      *HealthCheck      `json:"healthCheck,omitempty"`
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	Timeout          *ListenerTimeout  `json:"timeout,omitempty"`
	// TLS is how the listener's callers authenticate (mTLS with the mesh's
	// certificates); nil is DISABLED.
	TLS *ListenerTLS `json:"tls,omitempty"`
}

// ListenerTLS is App Mesh's listener TLS. gmesh issues every workload's
// certificate from the mesh's CA, so Certificate and Validation.Trust, which
// name other sources in App Mesh, are refused for now.
type ListenerTLS struct {
	// Mode is STRICT (mTLS only: a caller must present a mesh certificate),
	// PERMISSIVE (plain text is served; the node still gets its
	// certificate) or DISABLED.
	Mode        string         `json:"mode"`
	Certificate *TLSSource     `json:"certificate,omitempty"`
	Validation  *TLSValidation `json:"validation,omitempty"`
}

// TLS modes of a listener.
const (
	TLSStrict     = "STRICT"
	TLSPermissive = "PERMISSIVE"
	TLSDisabled   = "DISABLED"
)

// TLSSource is App Mesh's certificate or trust source (exactly one of file,
// sds, acm). gmesh keeps the shape so App Mesh manifests decode, and says
// which it does not support.
type TLSSource struct {
	File *TLSFileSource `json:"file,omitempty"`
	SDS  *TLSSDSSource  `json:"sds,omitempty"`
	ACM  *TLSACMSource  `json:"acm,omitempty"`
}

// TLSFileSource names PEM files.
type TLSFileSource struct {
	CertificateChain string `json:"certificateChain"`
	PrivateKey       string `json:"privateKey,omitempty"`
}

// TLSSDSSource names an SDS secret.
type TLSSDSSource struct {
	SecretName string `json:"secretName"`
}

// TLSACMSource names AWS Certificate Manager resources.
type TLSACMSource struct {
	CertificateArn           string   `json:"certificateArn,omitempty"`
	CertificateAuthorityArns []string `json:"certificateAuthorityArns,omitempty"`
}

// TLSValidation says which peers to accept: those with a certificate from
// Trust (refused for now: the mesh CA is the trust) whose subject
// alternative names include one of SubjectAlternativeNames.
type TLSValidation struct {
	SubjectAlternativeNames *SubjectAlternativeNames `json:"subjectAlternativeNames,omitempty"`
	Trust                   *TLSSource               `json:"trust,omitempty"`
}

// SubjectAlternativeNames matches a peer certificate's SANs.
type SubjectAlternativeNames struct {
	Match SubjectAlternativeNameMatch `json:"match"`
}

// SubjectAlternativeNameMatch lists SANs, one of which the peer must have.
type SubjectAlternativeNameMatch struct {
	Exact []string `json:"exact"`
}

// PortMapping is a port and its protocol: grpc, http, http2 or tcp.
type PortMapping struct {
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
}

// Protocols a port mapping, health check or route may name.
const (
	ProtocolGRPC  = "grpc"
	ProtocolHTTP  = "http"
	ProtocolHTTP2 = "http2"
	ProtocolTCP   = "tcp"
)

// HealthCheck is App Mesh's active health check policy.
type HealthCheck struct {
	Protocol           string `json:"protocol"`
	Path               string `json:"path,omitempty"` // http/http2 only
	Port               int    `json:"port,omitempty"` // default: the listener's port
	IntervalMillis     int64  `json:"intervalMillis"`
	TimeoutMillis      int64  `json:"timeoutMillis"`
	HealthyThreshold   int    `json:"healthyThreshold"`
	UnhealthyThreshold int    `json:"unhealthyThreshold"`
}

// OutlierDetection is App Mesh's passive ejection policy.
type OutlierDetection struct {
	MaxServerErrors      int      `json:"maxServerErrors"`
	Interval             Duration `json:"interval"`
	BaseEjectionDuration Duration `json:"baseEjectionDuration"`
	MaxEjectionPercent   int      `json:"maxEjectionPercent"`
}

// ListenerTimeout holds per-protocol listener timeouts.
type ListenerTimeout struct {
	GRPC  *RouteTimeout `json:"grpc,omitempty"`
	HTTP  *RouteTimeout `json:"http,omitempty"`
	HTTP2 *RouteTimeout `json:"http2,omitempty"`
}

// Duration is App Mesh's {value, unit} duration; unit is "ms" or "s".
type Duration struct {
	Value int64  `json:"value"`
	Unit  string `json:"unit"`
}

// ServiceDiscovery selects a virtual node's endpoints. Registry is gmesh's
// replacement for Cloud Map: endpoints registered under ServiceName whose
// attributes include every listed attribute. AWSCloudMap is accepted with the
// same meaning so App Mesh manifests carry over. DNS names one fixed
// host:port endpoint (the listener's port).
type ServiceDiscovery struct {
	Registry    *RegistryDiscovery `json:"registry,omitempty"`
	AWSCloudMap *RegistryDiscovery `json:"awsCloudMap,omitempty"`
	DNS         *DNSDiscovery      `json:"dns,omitempty"`
}

// RegistryDiscovery selects registered endpoints by service and attributes.
type RegistryDiscovery struct {
	NamespaceName string      `json:"namespaceName,omitempty"`
	ServiceName   string      `json:"serviceName"`
	Attributes    []Attribute `json:"attributes,omitempty"`
}

// Attribute is one key/value an endpoint must carry to be selected.
type Attribute struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// DNSDiscovery names a fixed host.
type DNSDiscovery struct {
	Hostname string `json:"hostname"`
}

// Selector returns the registry selection of d (Registry, else AWSCloudMap),
// or nil when d selects by DNS or is nil.
func (d *ServiceDiscovery) Selector() *RegistryDiscovery {
	if d == nil {
		return nil
	}
	if d.Registry != nil {
		return d.Registry
	}
	return d.AWSCloudMap
}

// Backend is a virtual service a node calls.
type Backend struct {
	VirtualService *VirtualServiceBackend `json:"virtualService,omitempty"`
}

// VirtualServiceBackend names the called virtual service. As a node's
// backend it may carry a client policy; as a gateway route's target it may
// not.
type VirtualServiceBackend struct {
	VirtualServiceName string        `json:"virtualServiceName"`
	ClientPolicy       *ClientPolicy `json:"clientPolicy,omitempty"`
}

// BackendDefaults is the policy of a node's backends that set none.
type BackendDefaults struct {
	ClientPolicy *ClientPolicy `json:"clientPolicy,omitempty"`
}

// ClientPolicy is how a node calls a backend.
type ClientPolicy struct {
	TLS *ClientPolicyTLS `json:"tls,omitempty"`
}

// ClientPolicyTLS is App Mesh's client TLS policy: with Enforce (the
// default, as in App Mesh) the node calls the backend with mTLS, presenting
// its mesh certificate, on Ports (empty: every port) and accepts only a
// server whose certificate chains to the mesh CA and, when Validation lists
// subject alternative names, has one of them; when it lists none, the
// server must have the SPIFFE ID of the virtual node it was routed to.
type ClientPolicyTLS struct {
	Enforce     *bool          `json:"enforce,omitempty"`
	Ports       []int          `json:"ports,omitempty"`
	Certificate *TLSSource     `json:"certificate,omitempty"`
	Validation  *TLSValidation `json:"validation,omitempty"`
}

// Enforced reports whether p asks for TLS (Enforce unset means true).
func (p *ClientPolicyTLS) Enforced() bool {
	return p != nil && (p.Enforce == nil || *p.Enforce)
}

// AppliesTo reports whether p enforces TLS on calls to port.
func (p *ClientPolicyTLS) AppliesTo(port int) bool {
	if !p.Enforced() {
		return false
	}
	return len(p.Ports) == 0 || slices.Contains(p.Ports, port)
}

// BackendTLS returns the client TLS policy the node applies to calls to the
// virtual service named vs: the backend's own, else the node's
// backendDefaults; nil when neither sets one.
func (s *VirtualNodeSpec) BackendTLS(vs string) *ClientPolicyTLS {
	for _, b := range s.Backends {
		if b.VirtualService != nil && b.VirtualService.VirtualServiceName == vs {
			if cp := b.VirtualService.ClientPolicy; cp != nil && cp.TLS != nil {
				return cp.TLS
			}
			break
		}
	}
	if d := s.BackendDefaults; d != nil && d.ClientPolicy != nil {
		return d.ClientPolicy.TLS
	}
	return nil
}

// TLSMode is the TLS mode the node's tasks serve with: that of its first
// listener (the one its tasks listen on and its cluster is built from;
// validation refuses tls on any other), DISABLED when it has none.
func (s *VirtualNodeSpec) TLSMode() string {
	if len(s.Listeners) == 0 || s.Listeners[0].TLS == nil || s.Listeners[0].TLS.Mode == "" {
		return TLSDisabled
	}
	return s.Listeners[0].TLS.Mode
}

// NeedsIdentity reports whether the node's workloads need a mesh
// certificate: a listener whose TLS mode is not DISABLED, or an enforced
// client TLS policy.
func (s *VirtualNodeSpec) NeedsIdentity() bool {
	for _, l := range s.Listeners {
		if l.TLS != nil && l.TLS.Mode != "" && l.TLS.Mode != TLSDisabled {
			return true
		}
	}
	if d := s.BackendDefaults; d != nil && d.ClientPolicy != nil && d.ClientPolicy.TLS.Enforced() {
		return true
	}
	for _, b := range s.Backends {
		if b.VirtualService != nil && b.VirtualService.ClientPolicy != nil && b.VirtualService.ClientPolicy.TLS.Enforced() {
			return true
		}
	}
	return false
}

// ---- VirtualRouter and Route ----

// VirtualRouterSpec is a virtual router: listeners plus the routes that name
// it in their metadata.
type VirtualRouterSpec struct {
	Listeners []RouterListener `json:"listeners,omitempty"`
}

// RouterListener is a virtual router's listener.
type RouterListener struct {
	PortMapping PortMapping `json:"portMapping"`
}

// RouteSpec is a route of a virtual router. Exactly one of GRPCRoute,
// HTTPRoute, HTTP2Route is set.
type RouteSpec struct {
	VirtualRouterName string     `json:"virtualRouterName"`
	Priority          *int       `json:"priority,omitempty"`
	GRPCRoute         *GRPCRoute `json:"grpcRoute,omitempty"`
	HTTPRoute         *HTTPRoute `json:"httpRoute,omitempty"`
	HTTP2Route        *HTTPRoute `json:"http2Route,omitempty"`
}

// GRPCRoute matches gRPC calls by service, method and metadata.
type GRPCRoute struct {
	Match       GRPCRouteMatch   `json:"match"`
	Action      RouteAction      `json:"action"`
	RetryPolicy *GRPCRetryPolicy `json:"retryPolicy,omitempty"`
	Timeout     *RouteTimeout    `json:"timeout,omitempty"`
}

// GRPCRouteMatch matches on the gRPC service and method names and metadata.
type GRPCRouteMatch struct {
	ServiceName string          `json:"serviceName,omitempty"`
	MethodName  string          `json:"methodName,omitempty"`
	Metadata    []MetadataMatch `json:"metadata,omitempty"`
}

// MetadataMatch matches one header/metadata entry.
type MetadataMatch struct {
	Name   string       `json:"name"`
	Invert bool         `json:"invert,omitempty"`
	Match  *HeaderMatch `json:"match,omitempty"`
}

// HeaderMatch is one of exact, prefix, suffix, regex.
type HeaderMatch struct {
	Exact  string `json:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	Suffix string `json:"suffix,omitempty"`
	Regex  string `json:"regex,omitempty"`
}

// RouteAction splits traffic across virtual nodes by weight.
type RouteAction struct {
	WeightedTargets []WeightedTarget `json:"weightedTargets"`
}

// WeightedTarget is one virtual node and its weight (0..100).
type WeightedTarget struct {
	VirtualNode string `json:"virtualNode"`
	Weight      int    `json:"weight"`
	Port        int    `json:"port,omitempty"`
}

// GRPCRetryPolicy is App Mesh's gRPC retry policy.
type GRPCRetryPolicy struct {
	GRPCRetryEvents []string `json:"grpcRetryEvents,omitempty"` // cancelled, deadline-exceeded, internal, resource-exhausted, unavailable
	HTTPRetryEvents []string `json:"httpRetryEvents,omitempty"`
	TCPRetryEvents  []string `json:"tcpRetryEvents,omitempty"`
	MaxRetries      int      `json:"maxRetries"`
	PerRetryTimeout Duration `json:"perRetryTimeout"`
}

// RouteTimeout is a route's request timeouts.
type RouteTimeout struct {
	PerRequest *Duration `json:"perRequest,omitempty"`
	Idle       *Duration `json:"idle,omitempty"`
}

// HTTPRoute matches HTTP requests by path prefix, method and headers.
type HTTPRoute struct {
	Match       HTTPRouteMatch   `json:"match"`
	Action      RouteAction      `json:"action"`
	RetryPolicy *HTTPRetryPolicy `json:"retryPolicy,omitempty"`
	Timeout     *RouteTimeout    `json:"timeout,omitempty"`
}

// HTTPRouteMatch matches an HTTP request.
type HTTPRouteMatch struct {
	Prefix  string          `json:"prefix,omitempty"`
	Path    *HeaderMatch    `json:"path,omitempty"`
	Method  string          `json:"method,omitempty"`
	Headers []MetadataMatch `json:"headers,omitempty"`
}

// HTTPRetryPolicy is App Mesh's HTTP retry policy.
type HTTPRetryPolicy struct {
	HTTPRetryEvents []string `json:"httpRetryEvents,omitempty"` // server-error, gateway-error, client-error, stream-error
	TCPRetryEvents  []string `json:"tcpRetryEvents,omitempty"`
	MaxRetries      int      `json:"maxRetries"`
	PerRetryTimeout Duration `json:"perRetryTimeout"`
}

// ---- VirtualService ----

// VirtualServiceSpec is a virtual service; its name is the name clients dial
// (xds:///<name>).
type VirtualServiceSpec struct {
	Provider *VirtualServiceProvider `json:"provider"`
}

// VirtualServiceProvider is a router or a single node.
type VirtualServiceProvider struct {
	VirtualRouter *ProviderRef `json:"virtualRouter,omitempty"`
	VirtualNode   *ProviderRef `json:"virtualNode,omitempty"`
}

// ProviderRef names the providing router or node.
type ProviderRef struct {
	VirtualRouterName string `json:"virtualRouterName,omitempty"`
	VirtualNodeName   string `json:"virtualNodeName,omitempty"`
}

// ---- VirtualGateway and GatewayRoute ----

// VirtualGatewaySpec is an ingress gateway (the ALB's role).
type VirtualGatewaySpec struct {
	Listeners []GatewayListener `json:"listeners"`
	// Address is the host the gateway binds, default 127.0.0.1.
	Address string `json:"address,omitempty"`
	// MaxRequestBytes limits request bodies (default 1 MiB).
	MaxRequestBytes int64 `json:"maxRequestBytes,omitempty"`
}

// GatewayListener is a gateway's listener.
type GatewayListener struct {
	PortMapping PortMapping  `json:"portMapping"`
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`
}

// GatewayRouteSpec routes gateway traffic to a virtual service.
type GatewayRouteSpec struct {
	VirtualGatewayName string            `json:"virtualGatewayName"`
	Priority           *int              `json:"priority,omitempty"`
	HTTPRoute          *GatewayHTTPRoute `json:"httpRoute,omitempty"`
	HTTP2Route         *GatewayHTTPRoute `json:"http2Route,omitempty"`
	GRPCRoute          *GatewayGRPCRoute `json:"grpcRoute,omitempty"`
}

// GatewayHTTPRoute matches HTTP requests arriving at the gateway.
type GatewayHTTPRoute struct {
	Match  GatewayHTTPMatch       `json:"match"`
	Action GatewayHTTPRouteAction `json:"action"`
}

// GatewayHTTPMatch is a gateway route's HTTP match, App Mesh's fields:
// exactly one of Prefix or Path, and optionally the method, the host name,
// headers, query parameters and the listener port. Every field given must
// match.
type GatewayHTTPMatch struct {
	Prefix          string                `json:"prefix,omitempty"`
	Path            *HeaderMatch          `json:"path,omitempty"` // exact or regex
	Method          string                `json:"method,omitempty"`
	Hostname        *HostnameMatch        `json:"hostname,omitempty"`
	Headers         []MetadataMatch       `json:"headers,omitempty"`
	QueryParameters []QueryParameterMatch `json:"queryParameters,omitempty"`
	Port            int                   `json:"port,omitempty"`
}

// HostnameMatch matches the request's host name (without its port), exactly
// or by suffix.
type HostnameMatch struct {
	Exact  string `json:"exact,omitempty"`
	Suffix string `json:"suffix,omitempty"`
}

// QueryParameterMatch matches one query parameter: present (Match nil) or
// equal to Match.Exact.
type QueryParameterMatch struct {
	Name  string      `json:"name"`
	Match *QueryMatch `json:"match,omitempty"`
}

// QueryMatch is a query parameter's exact value.
type QueryMatch struct {
	Exact string `json:"exact,omitempty"`
}

// GatewayGRPCRoute matches gRPC calls arriving at the gateway.
type GatewayGRPCRoute struct {
	Match  GatewayGRPCMatch       `json:"match"`
	Action GatewayGRPCRouteAction `json:"action"`
}

// GatewayGRPCMatch is a gateway route's gRPC match: the service name, the
// host name, metadata and the listener port.
type GatewayGRPCMatch struct {
	ServiceName string          `json:"serviceName,omitempty"`
	Hostname    *HostnameMatch  `json:"hostname,omitempty"`
	Metadata    []MetadataMatch `json:"metadata,omitempty"`
	Port        int             `json:"port,omitempty"`
}

// GatewayHTTPRouteAction targets a virtual service and says how the request
// is rewritten on the way.
type GatewayHTTPRouteAction struct {
	Target  GatewayTarget       `json:"target"`
	Rewrite *GatewayHTTPRewrite `json:"rewrite,omitempty"`
}

// GatewayGRPCRouteAction targets a virtual service; only the host name can be
// rewritten.
type GatewayGRPCRouteAction struct {
	Target  GatewayTarget       `json:"target"`
	Rewrite *GatewayGRPCRewrite `json:"rewrite,omitempty"`
}

// GatewayTarget names the target virtual service (and optionally the port of
// its provider's listener).
type GatewayTarget struct {
	VirtualService VirtualServiceBackend `json:"virtualService"`
	Port           int                   `json:"port,omitempty"`
}

// GatewayHTTPRewrite is App Mesh's request rewrite of an HTTP gateway route:
// at most one of Prefix (for a prefix match) or Path (replace the whole
// path), and the host name.
type GatewayHTTPRewrite struct {
	Prefix   *PrefixRewrite   `json:"prefix,omitempty"`
	Path     *PathRewrite     `json:"path,omitempty"`
	Hostname *HostnameRewrite `json:"hostname,omitempty"`
}

// GatewayGRPCRewrite is a gRPC gateway route's rewrite: the host name only.
type GatewayGRPCRewrite struct {
	Hostname *HostnameRewrite `json:"hostname,omitempty"`
}

// PrefixRewrite replaces the matched prefix: with Value when set, else, when
// DefaultPrefix is ENABLED (the default), with "/".
type PrefixRewrite struct {
	DefaultPrefix string `json:"defaultPrefix,omitempty"` // ENABLED | DISABLED
	Value         string `json:"value,omitempty"`
}

// PathRewrite replaces the whole path.
type PathRewrite struct {
	Exact string `json:"exact"`
}

// HostnameRewrite: DefaultTargetHostname ENABLED (the default) sends the
// target virtual service's name as the request's host; DISABLED keeps the
// client's.
type HostnameRewrite struct {
	DefaultTargetHostname string `json:"defaultTargetHostname,omitempty"` // ENABLED | DISABLED
}

// Rewrite switch values.
const (
	Enabled  = "ENABLED"
	Disabled = "DISABLED"
)

// ---- gmesh runtime kinds ----

// ServiceSpec declares a service the way ECS declares a service plus its
// task definition. Its tasks run as TaskSets (one per version); `gmesh up`
// creates the first TaskSet, `gmesh deploy` the next ones.
type ServiceSpec struct {
	// VirtualNode is the node the service's current version backs.
	VirtualNode string `json:"virtualNode"`
	// Program is how to get the task's executable.
	Program Program `json:"program"`
	// DesiredCount is the number of tasks per task set (default 1).
	DesiredCount int `json:"desiredCount"`
	// Port is the port each task listens on; the task gets it as $PORT.
	Port int `json:"port"`
	// Env is extra environment for every task.
	Env map[string]string `json:"env,omitempty"`
	// Version labels the first task set when the program cannot say its
	// version (`--version`); default: asked from the program.
	Version string `json:"version,omitempty"`
	// MetricsPath is where a task serves Prometheus metrics on $METRICS_PORT
	// (default /metrics); empty Program.NoMetrics turns scraping off.
	MetricsPath string `json:"metricsPath,omitempty"`
}

// Program is a Go package built with `go build` into a content-addressed
// artifact, or a command run as is.
type Program struct {
	Package string   `json:"package,omitempty"`
	Command []string `json:"command,omitempty"`
}

// TaskSetSpec is one version of a service's tasks.
type TaskSetSpec struct {
	Service      string            `json:"service"`
	VirtualNode  string            `json:"virtualNode"`
	Version      string            `json:"version"`
	Revision     int               `json:"revision"`
	Command      []string          `json:"command"`            // argv[0] is the artifact path or program
	Artifact     string            `json:"artifact,omitempty"` // content digest, "sha256:..."
	Env          map[string]string `json:"env,omitempty"`
	DesiredCount int               `json:"desiredCount"`
	Port         int               `json:"port"`
	// Draining tells the runtime to stop the set's tasks gracefully.
	Draining bool `json:"draining,omitempty"`
}

// ---- Endpoints (the registry) ----

// HealthStatus is an endpoint's health as the control plane sees it.
type HealthStatus string

// Health states.
const (
	HealthUnknown   HealthStatus = "UNKNOWN"
	HealthHealthy   HealthStatus = "HEALTHY"
	HealthUnhealthy HealthStatus = "UNHEALTHY"
)

// TaskState is a task's lifecycle state as its runtime reports it.
type TaskState string

// Task states, after ECS's.
const (
	TaskPending  TaskState = "PENDING"
	TaskRunning  TaskState = "RUNNING"
	TaskStopping TaskState = "STOPPING"
	TaskStopped  TaskState = "STOPPED"
)

// Endpoint is one registered task instance.
type Endpoint struct {
	// ID is unique in the mesh (the task id).
	ID         string            `json:"id"`
	Mesh       string            `json:"mesh"`
	Service    string            `json:"service"`
	Address    string            `json:"address"`
	Port       int               `json:"port"`
	Attributes map[string]string `json:"attributes,omitempty"`
	// MetricsAddr is host:port of the task's Prometheus endpoint, if any.
	MetricsAddr string `json:"metricsAddr,omitempty"`
	// State is the task's lifecycle state as its runtime reports it.
	State  TaskState    `json:"state"`
	Health HealthStatus `json:"health"`
	// Draining endpoints leave EDS before their task stops.
	Draining bool `json:"draining,omitempty"`
	// LastHealthError is the last failed check's error.
	LastHealthError string `json:"lastHealthError,omitempty"`
	// Process is the local runtime's status of the task's OS process; nil
	// for every other runtime (a Kubernetes endpoint, a Ready pod, never
	// sets it). Read it through Proc, which is nil-safe.
	Process *ProcessStatus `json:"process,omitempty"`
}

// ProcessStatus is the local runtime's status of the OS process that runs a
// task (internal/runtime/local, `gmesh up`). It lives here, not in the
// runtime, so the registry, the CLI and the dashboard can read it without
// importing the runtime; nothing outside the local runtime sets it.
type ProcessStatus struct {
	// PID is the running process's id; 0 while none runs.
	PID int `json:"pid,omitempty"`
	// Restarts counts the times the task's process ended unexpectedly (or
	// failed to start) and was started again.
	Restarts int `json:"restarts,omitempty"`
	// LastExit is how the task's process last ended ("exit status 3"), and
	// RestartAt (RFC 3339), when set, when a crashed task starts again: a
	// task in a crash loop waits longer each time.
	LastExit  string `json:"lastExit,omitempty"`
	RestartAt string `json:"restartAt,omitempty"`
	// Certificate is the task's workload certificate, in a mesh with TLS
	// on (zero otherwise).
	Certificate CertificateStatus `json:"certificate,omitzero"`
}

// CertificateStatus is a task's workload certificate as `gmesh up`, which
// issues and renews it, last saw it. Times are RFC 3339.
type CertificateStatus struct {
	// ID is the certificate's SPIFFE ID.
	ID string `json:"id,omitempty"`
	// NotAfter is when it expires; RenewAt when the next renewal (or
	// retry of a failed one) is due.
	NotAfter string `json:"notAfter,omitempty"`
	RenewAt  string `json:"renewAt,omitempty"`
	// Renewals counts the successful renewals; Failures the consecutive
	// failed ones, LastError the last failure.
	Renewals  int    `json:"renewals,omitempty"`
	Failures  int    `json:"failures,omitempty"`
	LastError string `json:"lastError,omitempty"`
}

// Proc returns e's process status, or the zero ProcessStatus when its
// runtime reports none.
func (e *Endpoint) Proc() ProcessStatus {
	if e == nil || e.Process == nil {
		return ProcessStatus{}
	}
	return *e.Process
}

// UnmarshalJSON decodes an endpoint, including one written before Process
// existed, with pid, restarts, lastExit and restartAt at the top level (as
// the control plane's store may still hold them): those become Process when
// the JSON has no "process".
func (e *Endpoint) UnmarshalJSON(b []byte) error {
	type plain Endpoint // without this method
	var v struct {
		plain
		PID       int    `json:"pid"`
		Restarts  int    `json:"restarts"`
		LastExit  string `json:"lastExit"`
		RestartAt string `json:"restartAt"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*e = Endpoint(v.plain)
	legacy := ProcessStatus{PID: v.PID, Restarts: v.Restarts, LastExit: v.LastExit, RestartAt: v.RestartAt}
	if e.Process == nil && legacy != (ProcessStatus{}) {
		e.Process = &legacy
	}
	return nil
}

// Attribute names gmesh sets on every endpoint it registers.
const (
	AttrVersion = "version"
	AttrTaskSet = "taskSet"
)

// Matches reports whether e is selected by sel.
func (e *Endpoint) Matches(sel *RegistryDiscovery) bool {
	if sel == nil || e.Service != sel.ServiceName {
		return false
	}
	for _, a := range sel.Attributes {
		if e.Attributes[a.Key] != a.Value {
			return false
		}
	}
	return true
}

// Serving reports whether e belongs in EDS: running, healthy, not draining.
func (e *Endpoint) Serving() bool {
	return e.State == TaskRunning && e.Health == HealthHealthy && !e.Draining
}
