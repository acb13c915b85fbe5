package v1beta2

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// VirtualGatewayPortProtocol is a gateway listener's protocol.
// +kubebuilder:validation:Enum=grpc;http;http2
type VirtualGatewayPortProtocol string

// Gateway port protocols.
const (
	VirtualGatewayPortProtocolGRPC  VirtualGatewayPortProtocol = "grpc"
	VirtualGatewayPortProtocolHTTP  VirtualGatewayPortProtocol = "http"
	VirtualGatewayPortProtocolHTTP2 VirtualGatewayPortProtocol = "http2"
)

// VirtualGatewayPortMapping is a gateway listener's port and protocol.
type VirtualGatewayPortMapping struct {
	// Port the gateway receives on.
	Port PortNumber `json:"port"`
	// Protocol is grpc, http or http2.
	Protocol VirtualGatewayPortProtocol `json:"protocol"`
}

// VirtualGatewayHealthCheckPolicy is a gateway listener's health check.
type VirtualGatewayHealthCheckPolicy struct {
	// HealthyThreshold is the number of successes in a row that make the
	// gateway healthy.
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
	Protocol VirtualGatewayPortProtocol `json:"protocol"`
	// TimeoutMillis is how long a check may take.
	// +kubebuilder:validation:Minimum=2000
	// +kubebuilder:validation:Maximum=60000
	TimeoutMillis int64 `json:"timeoutMillis"`
	// UnhealthyThreshold is the number of failures in a row that make the
	// gateway unhealthy.
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=10
	UnhealthyThreshold int64 `json:"unhealthyThreshold"`
}

// VirtualGatewayConnectionPool limits the gateway's upstream connections:
// at most one of http, http2, grpc.
// +kubebuilder:validation:XValidation:rule="(has(self.http) ? 1 : 0) + (has(self.http2) ? 1 : 0) + (has(self.grpc) ? 1 : 0) <= 1",message="at most one of http, http2, grpc may be set"
type VirtualGatewayConnectionPool struct {
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

// VirtualGatewayListenerTLSACMCertificate is an AWS Certificate Manager
// certificate.
type VirtualGatewayListenerTLSACMCertificate struct {
	// CertificateARN is the certificate's ARN.
	CertificateARN string `json:"certificateARN"`
}

// VirtualGatewayListenerTLSFileCertificate is a certificate on the file
// system.
type VirtualGatewayListenerTLSFileCertificate struct {
	// CertificateChain is the chain file's path.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	CertificateChain string `json:"certificateChain"`
	// PrivateKey is the key file's path.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	PrivateKey string `json:"privateKey"`
}

// VirtualGatewayListenerTLSSDSCertificate is a certificate served over SDS.
type VirtualGatewayListenerTLSSDSCertificate struct {
	// SecretName is the SDS secret's name.
	SecretName *string `json:"secretName"`
}

// VirtualGatewayListenerTLSValidationContextTrust is where a gateway
// listener's trusted client authorities come from.
type VirtualGatewayListenerTLSValidationContextTrust struct {
	// ACM trusts AWS Certificate Manager authorities.
	// +optional
	ACM *VirtualGatewayTLSValidationContextACMTrust `json:"acm,omitempty"`
	// File trusts a chain file.
	// +optional
	File *VirtualGatewayTLSValidationContextFileTrust `json:"file,omitempty"`
	// SDS trusts a chain served over SDS.
	// +optional
	SDS *VirtualGatewayTLSValidationContextSDSTrust `json:"sds,omitempty"`
}

// VirtualGatewayListenerTLSCertificate is a gateway listener's certificate.
type VirtualGatewayListenerTLSCertificate struct {
	// ACM is an AWS Certificate Manager certificate.
	// +optional
	ACM *VirtualGatewayListenerTLSACMCertificate `json:"acm,omitempty"`
	// File is a certificate on the file system.
	// +optional
	File *VirtualGatewayListenerTLSFileCertificate `json:"file,omitempty"`
	// SDS is a certificate served over SDS.
	// +optional
	SDS *VirtualGatewayListenerTLSSDSCertificate `json:"sds,omitempty"`
}

// VirtualGatewayListenerTLSValidationContext is how a gateway listener
// validates client certificates.
type VirtualGatewayListenerTLSValidationContext struct {
	// Trust is where the trusted authorities come from.
	Trust VirtualGatewayListenerTLSValidationContextTrust `json:"trust"`
	// SubjectAlternativeNames restricts the accepted names.
	// +optional
	SubjectAlternativeNames *SubjectAlternativeNames `json:"subjectAlternativeNames,omitempty"`
}

// VirtualGatewayListenerTLSMode is a gateway listener's TLS mode.
// +kubebuilder:validation:Enum=DISABLED;PERMISSIVE;STRICT
type VirtualGatewayListenerTLSMode string

// Gateway listener TLS modes.
const (
	VirtualGatewayListenerTLSModeDisabled   VirtualGatewayListenerTLSMode = "DISABLED"
	VirtualGatewayListenerTLSModePermissive VirtualGatewayListenerTLSMode = "PERMISSIVE"
	VirtualGatewayListenerTLSModeStrict     VirtualGatewayListenerTLSMode = "STRICT"
)

// VirtualGatewayListenerTLS is a gateway listener's TLS.
type VirtualGatewayListenerTLS struct {
	// Certificate is the listener's certificate.
	Certificate VirtualGatewayListenerTLSCertificate `json:"certificate"`
	// Validation is how client certificates are validated.
	// +optional
	Validation *VirtualGatewayListenerTLSValidationContext `json:"validation,omitempty"`
	// Mode is DISABLED, PERMISSIVE or STRICT.
	Mode VirtualGatewayListenerTLSMode `json:"mode"`
}

// VirtualGatewayFileAccessLog writes access logs to a file.
type VirtualGatewayFileAccessLog struct {
	// Path of the log file.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	Path string `json:"path"`
	// Format of each line.
	// +optional
	Format *LoggingFormat `json:"format,omitempty"`
}

// VirtualGatewayAccessLog is where a gateway's access logs go.
type VirtualGatewayAccessLog struct {
	// File writes them to a file.
	// +optional
	File *VirtualGatewayFileAccessLog `json:"file,omitempty"`
}

// VirtualGatewayLogging is a gateway's access logging.
type VirtualGatewayLogging struct {
	// AccessLog is where access logs go.
	// +optional
	AccessLog *VirtualGatewayAccessLog `json:"accessLog,omitempty"`
}

// VirtualGatewayListener is a gateway's inbound port.
type VirtualGatewayListener struct {
	// PortMapping is the port and protocol.
	PortMapping VirtualGatewayPortMapping `json:"portMapping"`
	// HealthCheck is the listener's health check.
	// +optional
	HealthCheck *VirtualGatewayHealthCheckPolicy `json:"healthCheck,omitempty"`
	// ConnectionPool limits upstream connections.
	// +optional
	ConnectionPool *VirtualGatewayConnectionPool `json:"connectionPool,omitempty"`
	// TLS is the listener's TLS.
	// +optional
	TLS *VirtualGatewayListenerTLS `json:"tls,omitempty"`
}

// VirtualGatewayTLSValidationContextACMTrust trusts AWS Certificate
// Manager authorities.
type VirtualGatewayTLSValidationContextACMTrust struct {
	// CertificateAuthorityARNs are the trusted authorities.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=3
	CertificateAuthorityARNs []string `json:"certificateAuthorityARNs"`
}

// VirtualGatewayTLSValidationContextFileTrust trusts a chain file.
type VirtualGatewayTLSValidationContextFileTrust struct {
	// CertificateChain is the chain file's path.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	CertificateChain string `json:"certificateChain"`
}

// VirtualGatewayTLSValidationContextSDSTrust trusts a chain served over
// SDS.
type VirtualGatewayTLSValidationContextSDSTrust struct {
	// SecretName is the SDS secret's name.
	SecretName *string `json:"secretName"`
}

// VirtualGatewayTLSValidationContextTrust is one source of trusted
// authorities.
type VirtualGatewayTLSValidationContextTrust struct {
	// ACM trusts AWS Certificate Manager authorities.
	// +optional
	ACM *VirtualGatewayTLSValidationContextACMTrust `json:"acm,omitempty"`
	// File trusts a chain file.
	// +optional
	File *VirtualGatewayTLSValidationContextFileTrust `json:"file,omitempty"`
	// SDS trusts a chain served over SDS.
	// +optional
	SDS *VirtualGatewayTLSValidationContextSDSTrust `json:"sds,omitempty"`
}

// VirtualGatewayTLSValidationContext is how the gateway validates a
// backend's certificate.
type VirtualGatewayTLSValidationContext struct {
	// Trust is where the trusted authorities come from.
	Trust VirtualGatewayTLSValidationContextTrust `json:"trust"`
	// SubjectAlternativeNames restricts the accepted names.
	// +optional
	SubjectAlternativeNames *SubjectAlternativeNames `json:"subjectAlternativeNames,omitempty"`
}

// VirtualGatewayClientTLSCertificate is the gateway's own certificate.
type VirtualGatewayClientTLSCertificate struct {
	// File is a certificate on the file system.
	// +optional
	File *VirtualGatewayListenerTLSFileCertificate `json:"file,omitempty"`
	// SDS is a certificate served over SDS.
	// +optional
	SDS *VirtualGatewayListenerTLSSDSCertificate `json:"sds,omitempty"`
}

// VirtualGatewayClientPolicyTLS is the gateway's TLS policy towards
// backends.
type VirtualGatewayClientPolicyTLS struct {
	// Enforce makes TLS mandatory (App Mesh's default: true).
	// +optional
	Enforce *bool `json:"enforce,omitempty"`
	// Ports limits the policy to these ports.
	// +optional
	Ports []PortNumber `json:"ports,omitempty"`
	// Certificate is the gateway's own certificate (mutual TLS).
	// +optional
	Certificate *VirtualGatewayClientTLSCertificate `json:"certificate,omitempty"`
	// Validation is how a backend's certificate is validated.
	Validation VirtualGatewayTLSValidationContext `json:"validation"`
}

// VirtualGatewayClientPolicy is the gateway's policy towards backends.
type VirtualGatewayClientPolicy struct {
	// TLS is the gateway's TLS policy.
	// +optional
	TLS *VirtualGatewayClientPolicyTLS `json:"tls,omitempty"`
}

// VirtualGatewayBackendDefaults apply to every backend of a gateway.
type VirtualGatewayBackendDefaults struct {
	// ClientPolicy is the default policy towards backends.
	// +optional
	ClientPolicy *VirtualGatewayClientPolicy `json:"clientPolicy,omitempty"`
}

// VirtualGatewaySpec is an ingress gateway.
type VirtualGatewaySpec struct {
	// AWSName is the gateway's name in the mesh model; default:
	// NAME_NAMESPACE (gmesh spells it NAME.NAMESPACE).
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="awsName is immutable"
	// +kubebuilder:validation:MaxLength=255
	// +optional
	AWSName *string `json:"awsName,omitempty"`
	// NamespaceSelector selects the namespaces whose GatewayRoutes may
	// attach: empty selects every namespace, absent selects none.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// PodSelector selects the gateway's pods in its namespace.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// GatewayRouteSelector selects, by label, the GatewayRoutes that
	// attach; absent selects all of them.
	// +optional
	GatewayRouteSelector *metav1.LabelSelector `json:"gatewayRouteSelector,omitempty"`
	// Listeners are the gateway's ports.
	// +optional
	Listeners []VirtualGatewayListener `json:"listeners,omitempty"`
	// Logging is the gateway's access logging.
	// +optional
	Logging *VirtualGatewayLogging `json:"logging,omitempty"`
	// BackendDefaults apply to every backend.
	// +optional
	BackendDefaults *VirtualGatewayBackendDefaults `json:"backendDefaults,omitempty"`
	// MeshRef names the gateway's Mesh; default: the Mesh whose namespace
	// selector selects the gateway's namespace.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="meshRef is immutable"
	// +optional
	MeshRef *MeshReference `json:"meshRef,omitempty"`
}

// VirtualGatewayStatus is what gmesh reports about a gateway.
type VirtualGatewayStatus struct {
	// VirtualGatewayARN was App Mesh's; gmesh never sets it.
	// +optional
	VirtualGatewayARN *string `json:"virtualGatewayARN,omitempty"`

	GmeshStatus `json:",inline"`
}

// VirtualGateway is App Mesh's virtual gateway: the mesh's ingress.
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
type VirtualGateway struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   VirtualGatewaySpec   `json:"spec,omitempty"`
	Status VirtualGatewayStatus `json:"status,omitempty"`
}

// VirtualGatewayList is a list of gateways.
//
// +kubebuilder:object:root=true
type VirtualGatewayList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VirtualGateway `json:"items"`
}
