package v1beta2

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// TLSValidationContextACMTrust trusts AWS Certificate Manager authorities.
type TLSValidationContextACMTrust struct {
	// CertificateAuthorityARNs are the trusted authorities.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=3
	CertificateAuthorityARNs []string `json:"certificateAuthorityARNs"`
}

// TLSValidationContextFileTrust trusts a certificate chain file.
type TLSValidationContextFileTrust struct {
	// CertificateChain is the chain file's path.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	CertificateChain string `json:"certificateChain"`
}

// TLSValidationContextSDSTrust trusts a chain served over SDS.
type TLSValidationContextSDSTrust struct {
	// SecretName is the SDS secret's name.
	SecretName *string `json:"secretName"`
}

// TLSValidationContextTrust is one source of trusted authorities.
type TLSValidationContextTrust struct {
	// ACM trusts AWS Certificate Manager authorities.
	// +optional
	ACM *TLSValidationContextACMTrust `json:"acm,omitempty"`
	// File trusts a chain file.
	// +optional
	File *TLSValidationContextFileTrust `json:"file,omitempty"`
	// SDS trusts a chain served over SDS.
	// +optional
	SDS *TLSValidationContextSDSTrust `json:"sds,omitempty"`
}

// TLSValidationContext is how a client validates a server's certificate.
type TLSValidationContext struct {
	// Trust is where the trusted authorities come from.
	Trust TLSValidationContextTrust `json:"trust"`
	// SubjectAlternativeNames restricts the accepted names.
	// +optional
	SubjectAlternativeNames *SubjectAlternativeNames `json:"subjectAlternativeNames,omitempty"`
}

// ClientTLSCertificate is a client's own certificate.
type ClientTLSCertificate struct {
	// File is a certificate on the file system.
	// +optional
	File *ListenerTLSFileCertificate `json:"file,omitempty"`
	// SDS is a certificate served over SDS.
	// +optional
	SDS *ListenerTLSSDSCertificate `json:"sds,omitempty"`
}

// ClientPolicyTLS is a client's TLS policy towards a backend.
type ClientPolicyTLS struct {
	// Enforce makes TLS mandatory (App Mesh's default: true).
	// +optional
	Enforce *bool `json:"enforce,omitempty"`
	// Ports limits the policy to these ports.
	// +optional
	Ports []PortNumber `json:"ports,omitempty"`
	// Validation is how the backend's certificate is validated.
	Validation TLSValidationContext `json:"validation"`
	// Certificate is the client's own certificate (mutual TLS).
	// +optional
	Certificate *ClientTLSCertificate `json:"certificate,omitempty"`
}

// ClientPolicy is a client's policy towards a backend.
type ClientPolicy struct {
	// TLS is the client's TLS policy.
	// +optional
	TLS *ClientPolicyTLS `json:"tls,omitempty"`
}

// VirtualServiceBackend names the virtual service a node calls: exactly one
// of virtualServiceRef, virtualServiceARN.
// +kubebuilder:validation:XValidation:rule="has(self.virtualServiceRef) != has(self.virtualServiceARN)",message="exactly one of virtualServiceRef, virtualServiceARN must be set"
type VirtualServiceBackend struct {
	// VirtualServiceRef names a VirtualService object.
	// +optional
	VirtualServiceRef *VirtualServiceReference `json:"virtualServiceRef,omitempty"`
	// VirtualServiceARN names a virtual service by its App Mesh ARN
	// (arn:aws:appmesh:REGION:ACCOUNT:mesh/MESH/virtualService/NAME).
	// +optional
	VirtualServiceARN *string `json:"virtualServiceARN,omitempty"`
	// ClientPolicy is the node's policy towards this backend.
	// +optional
	ClientPolicy *ClientPolicy `json:"clientPolicy,omitempty"`
}

// Backend is a virtual service a virtual node calls.
type Backend struct {
	// VirtualService is the called virtual service.
	VirtualService VirtualServiceBackend `json:"virtualService"`
}

// BackendGroupReference names an App Mesh BackendGroup object.
type BackendGroupReference struct {
	// Namespace of the BackendGroup; default: the referring object's.
	// +optional
	Namespace *string `json:"namespace,omitempty"`
	// Name of the BackendGroup.
	Name string `json:"name"`
}

// BackendDefaults applies to every backend of a node.
type BackendDefaults struct {
	// ClientPolicy is the default policy towards backends.
	// +optional
	ClientPolicy *ClientPolicy `json:"clientPolicy,omitempty"`
}

// HealthCheckPolicy is a listener's active health check.
type HealthCheckPolicy struct {
	// HealthyThreshold is the number of successes in a row that make an
	// endpoint healthy.
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=10
	HealthyThreshold int64 `json:"healthyThreshold"`
	// IntervalMillis is the time between checks.
	// +kubebuilder:validation:Minimum=5000
	// +kubebuilder:validation:Maximum=300000
	IntervalMillis int64 `json:"intervalMillis"`
	// Path is the request path of http and http2 checks.
	// +optional
	Path *string `json:"path,omitempty"`
	// Port is the checked port; default: the listener's.
	// +optional
	Port *PortNumber `json:"port,omitempty"`
	// Protocol of the check.
	Protocol PortProtocol `json:"protocol"`
	// TimeoutMillis is how long a check may take.
	// +kubebuilder:validation:Minimum=2000
	// +kubebuilder:validation:Maximum=60000
	TimeoutMillis int64 `json:"timeoutMillis"`
	// UnhealthyThreshold is the number of failures in a row that make an
	// endpoint unhealthy.
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=10
	UnhealthyThreshold int64 `json:"unhealthyThreshold"`
}

// OutlierDetection ejects endpoints that return server errors.
type OutlierDetection struct {
	// MaxServerErrors is the number of server errors in an interval that
	// ejects an endpoint.
	// +kubebuilder:validation:Minimum=1
	MaxServerErrors int64 `json:"maxServerErrors"`
	// Interval is the time between ejection sweeps.
	Interval Duration `json:"interval"`
	// BaseEjectionDuration is the first ejection's length; later ones are
	// multiples of it.
	BaseEjectionDuration Duration `json:"baseEjectionDuration"`
	// MaxEjectionPercent caps the share of endpoints ejected at once.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxEjectionPercent int64 `json:"maxEjectionPercent"`
}

// ListenerTLSACMCertificate is an AWS Certificate Manager certificate.
type ListenerTLSACMCertificate struct {
	// CertificateARN is the certificate's ARN.
	CertificateARN string `json:"certificateARN"`
}

// ListenerTLSFileCertificate is a certificate on the file system.
type ListenerTLSFileCertificate struct {
	// CertificateChain is the chain file's path.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	CertificateChain string `json:"certificateChain"`
	// PrivateKey is the key file's path.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	PrivateKey string `json:"privateKey"`
}

// ListenerTLSSDSCertificate is a certificate served over SDS.
type ListenerTLSSDSCertificate struct {
	// SecretName is the SDS secret's name.
	SecretName *string `json:"secretName"`
}

// ListenerTLSCertificate is a listener's certificate: one of acm, file, sds.
type ListenerTLSCertificate struct {
	// ACM is an AWS Certificate Manager certificate.
	// +optional
	ACM *ListenerTLSACMCertificate `json:"acm,omitempty"`
	// File is a certificate on the file system.
	// +optional
	File *ListenerTLSFileCertificate `json:"file,omitempty"`
	// SDS is a certificate served over SDS.
	// +optional
	SDS *ListenerTLSSDSCertificate `json:"sds,omitempty"`
}

// ListenerTLSMode is a listener's TLS mode.
// +kubebuilder:validation:Enum=DISABLED;PERMISSIVE;STRICT
type ListenerTLSMode string

// Listener TLS modes.
const (
	ListenerTLSModeDisabled   ListenerTLSMode = "DISABLED"
	ListenerTLSModePermissive ListenerTLSMode = "PERMISSIVE"
	ListenerTLSModeStrict     ListenerTLSMode = "STRICT"
)

// ListenerTLSValidationContextTrust is where a listener's trusted client
// authorities come from.
type ListenerTLSValidationContextTrust struct {
	// File trusts a chain file.
	// +optional
	File *TLSValidationContextFileTrust `json:"file,omitempty"`
	// SDS trusts a chain served over SDS.
	// +optional
	SDS *TLSValidationContextSDSTrust `json:"sds,omitempty"`
}

// ListenerTLSValidationContext is how a listener validates client
// certificates.
type ListenerTLSValidationContext struct {
	// Trust is where the trusted authorities come from.
	Trust ListenerTLSValidationContextTrust `json:"trust"`
	// SubjectAlternativeNames restricts the accepted names.
	// +optional
	SubjectAlternativeNames *SubjectAlternativeNames `json:"subjectAlternativeNames,omitempty"`
}

// ListenerTLS is a listener's TLS.
type ListenerTLS struct {
	// Certificate is the listener's certificate.
	Certificate ListenerTLSCertificate `json:"certificate"`
	// Mode is DISABLED, PERMISSIVE or STRICT.
	Mode ListenerTLSMode `json:"mode"`
	// Validation is how client certificates are validated (mutual TLS).
	// +optional
	Validation *ListenerTLSValidationContext `json:"validation,omitempty"`
}

// ListenerTimeout holds a listener's timeouts per protocol.
type ListenerTimeout struct {
	// TCP timeouts.
	// +optional
	TCP *TCPTimeout `json:"tcp,omitempty"`
	// HTTP timeouts.
	// +optional
	HTTP *HTTPTimeout `json:"http,omitempty"`
	// HTTP2 timeouts.
	// +optional
	HTTP2 *HTTPTimeout `json:"http2,omitempty"`
	// GRPC timeouts.
	// +optional
	GRPC *GRPCTimeout `json:"grpc,omitempty"`
}

// VirtualNodeConnectionPool limits the connections Envoy opened to the
// local application: at most one of tcp, http, http2, grpc.
// +kubebuilder:validation:XValidation:rule="(has(self.tcp) ? 1 : 0) + (has(self.http) ? 1 : 0) + (has(self.http2) ? 1 : 0) + (has(self.grpc) ? 1 : 0) <= 1",message="at most one of tcp, http, http2, grpc may be set"
type VirtualNodeConnectionPool struct {
	// TCP pool.
	// +optional
	TCP *TCPConnectionPool `json:"tcp,omitempty"`
	// HTTP pool.
	// +optional
	HTTP *HTTPConnectionPool `json:"http,omitempty"`
	// HTTP2 pool.
	// +optional
	HTTP2 *HTTP2ConnectionPool `json:"http2,omitempty"`
	// GRPC pool.
	// +optional
	GRPC *GRPCConnectionPool `json:"grpc,omitempty"`
}

// Listener is a virtual node's inbound port.
type Listener struct {
	// PortMapping is the port and protocol.
	PortMapping PortMapping `json:"portMapping"`
	// HealthCheck is the listener's active health check.
	// +optional
	HealthCheck *HealthCheckPolicy `json:"healthCheck,omitempty"`
	// OutlierDetection ejects endpoints that return server errors.
	// +optional
	OutlierDetection *OutlierDetection `json:"outlierDetection,omitempty"`
	// ConnectionPool limits connections to the application.
	// +optional
	ConnectionPool *VirtualNodeConnectionPool `json:"connectionPool,omitempty"`
	// TLS is the listener's TLS.
	// +optional
	TLS *ListenerTLS `json:"tls,omitempty"`
	// Timeout holds the listener's timeouts.
	// +optional
	Timeout *ListenerTimeout `json:"timeout,omitempty"`
}

// AWSCloudMapInstanceAttribute is one attribute a Cloud Map instance must
// carry.
type AWSCloudMapInstanceAttribute struct {
	// Key of the attribute.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	Key string `json:"key"`
	// Value of the attribute.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Value string `json:"value"`
}

// AWSCloudMapServiceDiscovery selects Cloud Map instances.
type AWSCloudMapServiceDiscovery struct {
	// NamespaceName is the Cloud Map namespace.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	NamespaceName string `json:"namespaceName"`
	// ServiceName is the Cloud Map service.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	ServiceName string `json:"serviceName"`
	// Attributes filter the service's instances.
	// +optional
	Attributes []AWSCloudMapInstanceAttribute `json:"attributes,omitempty"`
}

// DNSServiceDiscovery names a DNS host.
type DNSServiceDiscovery struct {
	// Hostname is the DNS name.
	Hostname string `json:"hostname"`
	// ResponseType is Envoy's DNS mode: ENDPOINTS or LOADBALANCER.
	// +kubebuilder:validation:Enum=ENDPOINTS;LOADBALANCER
	// +optional
	ResponseType *string `json:"responseType,omitempty"`
}

// ServiceDiscovery is how App Mesh found a node's endpoints: one of
// awsCloudMap, dns.
// +kubebuilder:validation:XValidation:rule="!(has(self.awsCloudMap) && has(self.dns))",message="at most one of awsCloudMap, dns may be set"
type ServiceDiscovery struct {
	// AWSCloudMap selects Cloud Map instances.
	// +optional
	AWSCloudMap *AWSCloudMapServiceDiscovery `json:"awsCloudMap,omitempty"`
	// DNS names a DNS host.
	// +optional
	DNS *DNSServiceDiscovery `json:"dns,omitempty"`
}

// JsonFormatRef is one key of a JSON access log line.
type JsonFormatRef struct { //nolint:revive // App Mesh's spelling
	// Key is the JSON key.
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key"`
	// Value is the Envoy format string.
	// +kubebuilder:validation:MinLength=1
	Value string `json:"value"`
}

// LoggingFormat is an access log line's format: json or text.
type LoggingFormat struct {
	// Json writes a JSON object per line.
	// +optional
	Json []*JsonFormatRef `json:"json,omitempty"` //nolint:revive // App Mesh's spelling
	// Text is an Envoy format string.
	// +optional
	Text *string `json:"text,omitempty"`
}

// FileAccessLog writes access logs to a file.
type FileAccessLog struct {
	// Path of the log file.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	Path string `json:"path"`
	// Format of each line.
	// +optional
	Format *LoggingFormat `json:"format,omitempty"`
}

// AccessLog is where access logs go.
type AccessLog struct {
	// File writes them to a file.
	// +optional
	File *FileAccessLog `json:"file,omitempty"`
}

// Logging is a node's access logging (an Envoy setting).
type Logging struct {
	// AccessLog is where access logs go.
	// +optional
	AccessLog *AccessLog `json:"accessLog,omitempty"`
}

// VirtualNodeSpec is a virtual node: one version of one service, the pods
// its podSelector selects.
type VirtualNodeSpec struct {
	// AWSName is the node's name in the mesh model; default:
	// NAME_NAMESPACE (gmesh spells it NAME.NAMESPACE: its names have no
	// '_').
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="awsName is immutable"
	// +kubebuilder:validation:MaxLength=255
	// +optional
	AWSName *string `json:"awsName,omitempty"`
	// PodSelector selects the node's pods in its namespace: empty selects
	// every pod, absent selects none. The node's endpoints are the Ready
	// pods it selects.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// Listeners are the node's inbound ports.
	// +optional
	Listeners []Listener `json:"listeners,omitempty"`
	// ServiceDiscovery is how App Mesh found the node's endpoints.
	// +optional
	ServiceDiscovery *ServiceDiscovery `json:"serviceDiscovery,omitempty"`
	// Backends are the virtual services the node calls.
	// +optional
	Backends []Backend `json:"backends,omitempty"`
	// BackendGroups name App Mesh BackendGroup objects of backends.
	// +optional
	BackendGroups []BackendGroupReference `json:"backendGroups,omitempty"`
	// BackendDefaults apply to every backend.
	// +optional
	BackendDefaults *BackendDefaults `json:"backendDefaults,omitempty"`
	// Logging is the node's access logging.
	// +optional
	Logging *Logging `json:"logging,omitempty"`
	// MeshRef names the node's Mesh; default: the Mesh whose namespace
	// selector selects the node's namespace.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="meshRef is immutable"
	// +optional
	MeshRef *MeshReference `json:"meshRef,omitempty"`
}

// VirtualNodeStatus is what gmesh reports about a virtual node.
type VirtualNodeStatus struct {
	// VirtualNodeARN was App Mesh's; gmesh never sets it.
	// +optional
	VirtualNodeARN *string `json:"virtualNodeARN,omitempty"`

	GmeshStatus `json:",inline"`

	// Endpoints is the number of Ready pods serving the node.
	// +optional
	Endpoints *int32 `json:"endpoints,omitempty"`
}

// VirtualNode is App Mesh's virtual node.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories={all,appmesh}
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Mesh",type="string",JSONPath=".status.mesh"
// +kubebuilder:printcolumn:name="Accepted",type="string",JSONPath=".status.conditions[?(@.type=='Accepted')].status"
// +kubebuilder:printcolumn:name="Translated",type="string",JSONPath=".status.conditions[?(@.type=='Translated')].status"
// +kubebuilder:printcolumn:name="Endpoints",type="integer",JSONPath=".status.endpoints"
// +kubebuilder:printcolumn:name="ACKed",type="integer",JSONPath=".status.clients.acked"
// +kubebuilder:printcolumn:name="Clients",type="integer",JSONPath=".status.clients.total"
// +kubebuilder:printcolumn:name="Gmesh-Name",type="string",JSONPath=".status.gmeshName",priority=1
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
type VirtualNode struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualNodeSpec   `json:"spec,omitempty"`
	Status VirtualNodeStatus `json:"status,omitempty"`
}

// VirtualNodeList is a list of virtual nodes.
//
// +kubebuilder:object:root=true
type VirtualNodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualNode `json:"items"`
}
