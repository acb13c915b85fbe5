package mesh

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Names.
//
// A resource name is lower-case letters, digits, '-' and '.', starting and
// ending with a letter or digit (DNS-1123 subdomain syntax), so that every
// name is a valid xDS resource name and a valid host label. A virtual
// service's name is what clients dial (xds:///echo-server.echo.local), so it
// may be up to 253 characters, as a DNS name; every other name is at most 63,
// as a DNS label, because gmesh derives cluster, task and log names from it.
const (
	MaxNameLen               = 63
	MaxVirtualServiceNameLen = 253
)

// Health check bounds. App Mesh allows intervals of 5000..300000 ms and
// timeouts of 2000..60000 ms; gmesh allows both down to 100 ms because on one
// machine a check is cheap and tests and demos want fast failover.
const (
	MinHealthCheckMillis      = 100
	MaxHealthCheckInterval    = 300000
	MaxHealthCheckTimeout     = 60000
	MinHealthThreshold        = 2
	MaxHealthThreshold        = 10
	DefaultHealthInterval     = 5000
	DefaultHealthTimeout      = 2000
	DefaultHealthyThreshold   = 2
	DefaultUnhealthyThreshold = 3
)

// Defaults of the gmesh kinds.
const (
	DefaultDesiredCount          = 1
	DefaultMetricsPath           = "/metrics"
	DefaultMinSuccessRate        = 0.99
	DefaultMaxP99Millis          = 500
	DefaultMinRequests           = 20
	DefaultRolloutIntervalMillis = 15000
	DefaultRolloutTimeoutMillis  = 300000
	DefaultGatewayAddress        = "127.0.0.1"
	DefaultMaxRequestBytes       = 1 << 20
)

// DefaultRolloutSteps are a rollout's weights when it names none.
var DefaultRolloutSteps = []int{50, 100}

// Retry events, as App Mesh spells them.
var (
	GRPCRetryEvents = []string{"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
	HTTPRetryEvents = []string{"server-error", "gateway-error", "client-error", "stream-error"}
	TCPRetryEvents  = []string{"connection-error"}
)

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// ValidName reports why name is not a valid name for a resource of kind k,
// or "" if it is.
func ValidName(k Kind, name string) string {
	limit := MaxNameLen
	if k == KindVirtualService {
		limit = MaxVirtualServiceNameLen
	}
	switch {
	case name == "":
		return "required"
	case len(name) > limit:
		return fmt.Sprintf("must be at most %d characters, got %d", limit, len(name))
	case !nameRE.MatchString(name) || strings.Contains(name, ".."):
		return fmt.Sprintf("must be lower-case letters, digits, '-' and '.', starting and ending with a letter or digit; got %q", name)
	}
	return ""
}

// Std returns d as a time.Duration (0 for an unknown unit).
func (d Duration) Std() time.Duration {
	switch d.Unit {
	case "ms":
		return time.Duration(d.Value) * time.Millisecond
	case "s":
		return time.Duration(d.Value) * time.Second
	}
	return 0
}

// Default fills in r's omitted fields with their defaults, in place:
// apiVersion; health checks as App Mesh (protocol of the listener, interval
// 5000 ms, timeout 2000 ms, healthy 2, unhealthy 3); a gateway's address
// 127.0.0.1 and request limit 1 MiB; a Service's desiredCount 1 and
// metricsPath /metrics; a Rollout's steps [50, 100], interval 15 s, timeout
// 5 min and gates 0.99 / 500 ms / 20 requests. A zero value counts as
// omitted, so a Service cannot ask for 0 tasks (delete it instead).
func Default(r *Resource) {
	if r.APIVersion == "" {
		r.APIVersion = APIVersion
	}
	if r.Spec == nil {
		r.Spec = NewSpec(r.Kind)
	}
	switch s := r.Spec.(type) {
	case *VirtualNodeSpec:
		for i := range s.Listeners {
			defaultHealthCheck(s.Listeners[i].HealthCheck, s.Listeners[i].PortMapping.Protocol)
		}
	case *VirtualGatewaySpec:
		for i := range s.Listeners {
			defaultHealthCheck(s.Listeners[i].HealthCheck, s.Listeners[i].PortMapping.Protocol)
		}
		if s.Address == "" {
			s.Address = DefaultGatewayAddress
		}
		if s.MaxRequestBytes == 0 {
			s.MaxRequestBytes = DefaultMaxRequestBytes
		}
	case *ServiceSpec:
		if s.DesiredCount == 0 {
			s.DesiredCount = DefaultDesiredCount
		}
		if s.MetricsPath == "" {
			s.MetricsPath = DefaultMetricsPath
		}
	case *RolloutSpec:
		if len(s.Steps) == 0 {
			s.Steps = slices.Clone(DefaultRolloutSteps)
		}
		if s.IntervalMillis == 0 {
			s.IntervalMillis = DefaultRolloutIntervalMillis
		}
		if s.TimeoutMillis == 0 {
			s.TimeoutMillis = DefaultRolloutTimeoutMillis
		}
		if s.AckTimeoutMillis == 0 {
			s.AckTimeoutMillis = min(DefaultAckTimeoutMillis, s.TimeoutMillis)
		}
		if s.OnStalledClient == "" {
			s.OnStalledClient = StalledPause
		}
		if s.Gates.MinSuccessRate == 0 {
			s.Gates.MinSuccessRate = DefaultMinSuccessRate
		}
		if s.Gates.MaxP99Millis == 0 {
			s.Gates.MaxP99Millis = DefaultMaxP99Millis
		}
		if s.Gates.MinRequests == 0 {
			s.Gates.MinRequests = DefaultMinRequests
		}
	}
}

func defaultHealthCheck(hc *HealthCheck, listenerProtocol string) {
	if hc == nil {
		return
	}
	if hc.Protocol == "" {
		hc.Protocol = listenerProtocol
	}
	if hc.IntervalMillis == 0 {
		hc.IntervalMillis = DefaultHealthInterval
	}
	if hc.TimeoutMillis == 0 {
		hc.TimeoutMillis = DefaultHealthTimeout
	}
	if hc.HealthyThreshold == 0 {
		hc.HealthyThreshold = DefaultHealthyThreshold
	}
	if hc.UnhealthyThreshold == 0 {
		hc.UnhealthyThreshold = DefaultUnhealthyThreshold
	}
}

// DefaultAndValidate applies Default and Validate to each of rs and checks
// that no two have the same identity; it returns every problem as Errors.
func DefaultAndValidate(rs ...*Resource) error {
	var errs Errors
	for _, r := range rs {
		Default(r)
		errs = appendErrs(errs, Validate(r))
	}
	errs = appendErrs(errs, CheckDuplicates(rs))
	if len(errs) > 0 {
		return CapErrors(errs)
	}
	return nil
}

func appendErrs(errs Errors, err error) Errors {
	switch e := err.(type) {
	case nil:
	case Errors:
		errs = append(errs, e...)
	case *Error:
		errs = append(errs, e)
	default:
		errs = append(errs, &Error{Code: EInternal, Err: err})
	}
	return errs
}

// Validate checks r's fields on their own (references to other resources
// are ValidateState's business) and returns every problem as Errors, each
// naming r's file and document (when known) and the field's path. Call
// Default first: Validate does not treat a zero value as "omitted".
func Validate(r *Resource) error {
	v := &validator{r: r}
	v.validate()
	if len(v.errs) > 0 {
		return v.errs
	}
	return nil
}

type validator struct {
	r    *Resource
	errs Errors
}

func (v *validator) fail(field, format string, args ...any) {
	v.errs = append(v.errs, v.r.errAt(field, format, args...))
}

func (v *validator) validate() {
	r := v.r
	if r.APIVersion != APIVersion {
		v.fail("apiVersion", "must be %s, got %q", APIVersion, r.APIVersion)
	}
	if !r.Kind.Valid() {
		v.fail("kind", "unknown kind %q; want one of %s", r.Kind, kindList())
		return
	}
	v.name("metadata.name", r.Kind, r.Metadata.Name)
	if r.Kind == KindMesh {
		if r.Metadata.Mesh != "" {
			v.fail("metadata.mesh", "must be empty for a Mesh, got %q", r.Metadata.Mesh)
		}
	} else if r.Metadata.Mesh == "" {
		v.fail("metadata.mesh", "required: the mesh this %s belongs to", r.Kind)
	} else {
		v.name("metadata.mesh", KindMesh, r.Metadata.Mesh)
	}
	for k := range r.Metadata.Labels {
		if k == "" || len(k) > 253 || strings.ContainsAny(k, " \t\n") {
			v.fail(mapPath("metadata.labels", k), "invalid label key")
		}
	}
	if r.Spec == nil {
		if r.Kind != KindMesh {
			v.fail("spec", "required")
		}
		return
	}
	if want := reflect.PointerTo(kindInfos[r.Kind].spec); reflect.TypeOf(r.Spec) != want {
		v.fail("spec", "must be a %s for a %s, got %T", want, r.Kind, r.Spec)
		return
	}
	if t := kindInfos[r.Kind].status; t != nil && r.Status != nil && reflect.TypeOf(r.Status) != reflect.PointerTo(t) {
		v.fail("status", "must be a *%s for a %s, got %T", t, r.Kind, r.Status)
	}
	switch s := r.Spec.(type) {
	case *MeshSpec:
		if s.EgressFilter != nil {
			v.oneOf("spec.egressFilter.type", s.EgressFilter.Type, "DROP_ALL", "ALLOW_ALL")
		}
	case *VirtualNodeSpec:
		v.virtualNode(s)
	case *VirtualRouterSpec:
		ports := map[int]bool{}
		for i, l := range s.Listeners {
			v.portMapping(fmt.Sprintf("spec.listeners[%d].portMapping", i), l.PortMapping, ports, ProtocolGRPC, ProtocolHTTP, ProtocolHTTP2, ProtocolTCP)
		}
	case *RouteSpec:
		v.route(s)
	case *VirtualServiceSpec:
		v.virtualService(s)
	case *VirtualGatewaySpec:
		v.virtualGateway(s)
	case *GatewayRouteSpec:
		v.gatewayRoute(s)
	case *ServiceSpec:
		v.service(s)
	case *TaskSetSpec:
		v.taskSet("spec", s, true)
	case *RolloutSpec:
		v.rollout(s)
	}
}

func (v *validator) name(field string, k Kind, name string) {
	if why := ValidName(k, name); why != "" {
		v.fail(field, "%s", why)
	}
}

// ref checks a field that names a resource of kind k.
func (v *validator) ref(field string, k Kind, name string) {
	if why := ValidName(k, name); why != "" {
		if name == "" {
			why = "required: the name of a " + string(k)
		}
		v.fail(field, "%s", why)
	}
}

func (v *validator) oneOf(field, got string, allowed ...string) {
	if !slices.Contains(allowed, got) {
		if got == "" {
			v.fail(field, "required: one of %s", strings.Join(allowed, ", "))
			return
		}
		v.fail(field, "must be one of %s, got %q", strings.Join(allowed, ", "), got)
	}
}

func (v *validator) intRange(field string, got, lo, hi int64) {
	if got < lo || got > hi {
		v.fail(field, "must be %d..%d, got %d", lo, hi, got)
	}
}

func (v *validator) port(field string, port int, required bool) {
	if port == 0 && !required {
		return
	}
	if port < 1 || port > 65535 {
		v.fail(field, "must be a port 1..65535, got %d", port)
	}
}

func (v *validator) portMapping(field string, pm PortMapping, seen map[int]bool, protocols ...string) {
	v.port(field+".port", pm.Port, true)
	if seen[pm.Port] && pm.Port != 0 {
		v.fail(field+".port", "duplicate port %d", pm.Port)
	}
	seen[pm.Port] = true
	v.oneOf(field+".protocol", pm.Protocol, protocols...)
}

// countSet returns how many of set are true.
func countSet(set ...bool) int {
	n := 0
	for _, b := range set {
		if b {
			n++
		}
	}
	return n
}

func (v *validator) duration(field string, d Duration, required bool) {
	if d == (Duration{}) && !required {
		return
	}
	if d.Unit != "ms" && d.Unit != "s" {
		if d.Unit == "" {
			v.fail(field+".unit", "required: ms or s")
		} else {
			v.fail(field+".unit", "must be ms or s, got %q", d.Unit)
		}
	}
	switch {
	case d.Value < 0:
		v.fail(field+".value", "must not be negative, got %d", d.Value)
	case required && d.Value == 0:
		v.fail(field+".value", "must be positive")
	case d.Value > 1e9:
		v.fail(field+".value", "too large: %d", d.Value)
	}
}

func (v *validator) optDuration(field string, d *Duration) {
	if d != nil {
		v.duration(field, *d, false)
	}
}

func (v *validator) routeTimeout(field string, t *RouteTimeout) {
	if t == nil {
		return
	}
	v.optDuration(field+".perRequest", t.PerRequest)
	v.optDuration(field+".idle", t.Idle)
}

func (v *validator) healthCheck(field string, hc *HealthCheck) {
	if hc == nil {
		return
	}
	v.oneOf(field+".protocol", hc.Protocol, ProtocolGRPC, ProtocolHTTP, ProtocolHTTP2, ProtocolTCP)
	switch hc.Protocol {
	case ProtocolHTTP, ProtocolHTTP2:
		if hc.Path == "" {
			v.fail(field+".path", "required for an %s health check (e.g. /healthz)", hc.Protocol)
		} else if !strings.HasPrefix(hc.Path, "/") {
			v.fail(field+".path", "must start with /, got %q", hc.Path)
		}
	default:
		if hc.Path != "" {
			v.fail(field+".path", "only for http and http2 health checks")
		}
	}
	v.port(field+".port", hc.Port, false)
	v.intRange(field+".intervalMillis", hc.IntervalMillis, MinHealthCheckMillis, MaxHealthCheckInterval)
	v.intRange(field+".timeoutMillis", hc.TimeoutMillis, MinHealthCheckMillis, MaxHealthCheckTimeout)
	v.intRange(field+".healthyThreshold", int64(hc.HealthyThreshold), MinHealthThreshold, MaxHealthThreshold)
	v.intRange(field+".unhealthyThreshold", int64(hc.UnhealthyThreshold), MinHealthThreshold, MaxHealthThreshold)
}

func (v *validator) virtualNode(s *VirtualNodeSpec) {
	ports := map[int]bool{}
	for i, l := range s.Listeners {
		f := fmt.Sprintf("spec.listeners[%d]", i)
		v.portMapping(f+".portMapping", l.PortMapping, ports, ProtocolGRPC, ProtocolHTTP, ProtocolHTTP2, ProtocolTCP)
		v.healthCheck(f+".healthCheck", l.HealthCheck)
		if od := l.OutlierDetection; od != nil {
			g := f + ".outlierDetection"
			if od.MaxServerErrors < 1 {
				v.fail(g+".maxServerErrors", "must be at least 1, got %d", od.MaxServerErrors)
			}
			v.duration(g+".interval", od.Interval, true)
			v.duration(g+".baseEjectionDuration", od.BaseEjectionDuration, true)
			v.intRange(g+".maxEjectionPercent", int64(od.MaxEjectionPercent), 0, 100)
		}
		if t := l.Timeout; t != nil {
			v.routeTimeout(f+".timeout.grpc", t.GRPC)
			v.routeTimeout(f+".timeout.http", t.HTTP)
			v.routeTimeout(f+".timeout.http2", t.HTTP2)
		}
		if t := l.TLS; t != nil {
			g := f + ".tls"
			v.oneOf(g+".mode", t.Mode, TLSStrict, TLSPermissive, TLSDisabled)
			if i > 0 && t.Mode != TLSDisabled {
				v.fail(g+".mode", "only the first listener may have TLS: a node's tasks serve on it")
			}
			if t.Mode == TLSStrict && l.PortMapping.Protocol != ProtocolGRPC {
				v.fail(g+".mode", "STRICT needs protocol grpc (gmesh's workloads serve mTLS as xDS gRPC servers), got %q", l.PortMapping.Protocol)
			}
			v.tlsSource(g+".certificate", t.Certificate)
			if t.Validation != nil {
				v.listenerValidation(g+".validation", t.Mode, t.Validation)
			}
		}
	}
	if sd := s.ServiceDiscovery; sd != nil {
		f := "spec.serviceDiscovery"
		if n := countSet(sd.Registry != nil, sd.AWSCloudMap != nil, sd.DNS != nil); n != 1 {
			v.fail(f, "exactly one of registry, awsCloudMap, dns is required, got %d", n)
		}
		for _, x := range []struct {
			name string
			rd   *RegistryDiscovery
		}{{"registry", sd.Registry}, {"awsCloudMap", sd.AWSCloudMap}} {
			name, rd := x.name, x.rd
			if rd == nil {
				continue
			}
			g := f + "." + name
			if rd.ServiceName == "" {
				v.fail(g+".serviceName", "required: the service name tasks register under")
			} else if strings.ContainsAny(rd.ServiceName, " \t\n/") {
				v.fail(g+".serviceName", "must not contain spaces or '/', got %q", rd.ServiceName)
			}
			keys := map[string]bool{}
			for i, a := range rd.Attributes {
				if a.Key == "" {
					v.fail(fmt.Sprintf("%s.attributes[%d].key", g, i), "required")
				} else if keys[a.Key] {
					v.fail(fmt.Sprintf("%s.attributes[%d].key", g, i), "duplicate attribute %q", a.Key)
				}
				keys[a.Key] = true
			}
		}
		if sd.DNS != nil && sd.DNS.Hostname == "" {
			v.fail(f+".dns.hostname", "required")
		}
	}
	seen := map[string]bool{}
	for i, b := range s.Backends {
		f := fmt.Sprintf("spec.backends[%d].virtualService", i)
		if b.VirtualService == nil {
			v.fail(f, "required")
			continue
		}
		n := b.VirtualService.VirtualServiceName
		v.ref(f+".virtualServiceName", KindVirtualService, n)
		if seen[n] && n != "" {
			v.fail(f+".virtualServiceName", "duplicate backend %q", n)
		}
		seen[n] = true
		if cp := b.VirtualService.ClientPolicy; cp != nil {
			v.clientPolicyTLS(f+".clientPolicy.tls", cp.TLS)
		}
	}
	if d := s.BackendDefaults; d != nil && d.ClientPolicy != nil {
		v.clientPolicyTLS("spec.backendDefaults.clientPolicy.tls", d.ClientPolicy.TLS)
	}
}

// whyMeshCA is why gmesh refuses App Mesh's certificate and trust sources.
const whyMeshCA = "not supported: gmesh issues every workload's certificate from the mesh's CA and trusts only that CA (docs/security.md); remove it"

func (v *validator) tlsSource(field string, src *TLSSource) {
	if src != nil {
		v.fail(field, whyMeshCA)
	}
}

func (v *validator) tlsValidation(field string, val *TLSValidation) {
	if val == nil {
		return
	}
	v.tlsSource(field+".trust", val.Trust)
	if sans := val.SubjectAlternativeNames; sans != nil {
		f := field + ".subjectAlternativeNames.match.exact"
		if len(sans.Match.Exact) == 0 {
			v.fail(f, "required: at least one subject alternative name (or leave subjectAlternativeNames out)")
		}
		seen := map[string]bool{}
		for i, san := range sans.Match.Exact {
			g := fmt.Sprintf("%s[%d]", f, i)
			switch {
			case san == "" || strings.ContainsAny(san, " \t\n"):
				v.fail(g, "must be a non-empty name without spaces, got %q", san)
			case seen[san]:
				v.fail(g, "duplicate %q", san)
			}
			seen[san] = true
		}
	}
}

// listenerValidation checks a listener's tls.validation: the SANs a
// caller must have, enforced by the STRICT node's RBAC filter on top of the
// backends rule (docs/security.md, Authorization).
func (v *validator) listenerValidation(field, mode string, val *TLSValidation) {
	v.tlsValidation(field, val)
	if mode != TLSStrict {
		v.fail(field, "needs mode STRICT: a %s listener serves plain text, so callers present no certificate to check", cmp.Or(mode, TLSDisabled))
		return
	}
	if val.SubjectAlternativeNames == nil {
		return
	}
	for i, san := range val.SubjectAlternativeNames.Match.Exact {
		if !strings.HasPrefix(san, "spiffe://") {
			v.fail(fmt.Sprintf("%s.subjectAlternativeNames.match.exact[%d]", field, i),
				"%q can never match: gmesh's workload certificates carry only a SPIFFE ID (spiffe://MESH.gmesh.local/vn/NODE)", san)
		}
	}
}

func (v *validator) clientPolicyTLS(field string, p *ClientPolicyTLS) {
	if p == nil {
		return
	}
	seen := map[int]bool{}
	for i, port := range p.Ports {
		g := fmt.Sprintf("%s.ports[%d]", field, i)
		v.intRange(g, int64(port), 1, 65535)
		if seen[port] {
			v.fail(g, "duplicate port %d", port)
		}
		seen[port] = true
	}
	v.tlsSource(field+".certificate", p.Certificate)
	v.tlsValidation(field+".validation", p.Validation)
	if p.Validation != nil && p.Validation.SubjectAlternativeNames != nil {
		v.fail(field+".validation.subjectAlternativeNames", "not supported yet: every caller shares a backend's cluster, so the server's certificate is checked against the SPIFFE ID of the virtual node a call is routed to")
	}
}

func (v *validator) route(s *RouteSpec) {
	v.ref("spec.virtualRouterName", KindVirtualRouter, s.VirtualRouterName)
	if s.Priority != nil {
		v.intRange("spec.priority", int64(*s.Priority), 0, 1000)
	}
	if n := countSet(s.GRPCRoute != nil, s.HTTPRoute != nil, s.HTTP2Route != nil); n != 1 {
		v.fail("spec", "exactly one of grpcRoute, httpRoute, http2Route is required, got %d", n)
	}
	if g := s.GRPCRoute; g != nil {
		f := "spec.grpcRoute"
		if g.Match.MethodName != "" && g.Match.ServiceName == "" {
			v.fail(f+".match.methodName", "needs match.serviceName")
		}
		if g.Match.ServiceName != "" && strings.ContainsAny(g.Match.ServiceName, "/ ") {
			v.fail(f+".match.serviceName", "must be a fully qualified service name like proto.echo.EchoService, got %q", g.Match.ServiceName)
		}
		v.headerMatches(f+".match.metadata", g.Match.Metadata)
		v.action(f+".action", g.Action)
		if p := g.RetryPolicy; p != nil {
			v.retry(f+".retryPolicy", p.MaxRetries, p.PerRetryTimeout, map[string][]string{
				"grpcRetryEvents": p.GRPCRetryEvents, "httpRetryEvents": p.HTTPRetryEvents, "tcpRetryEvents": p.TCPRetryEvents,
			})
		}
		v.routeTimeout(f+".timeout", g.Timeout)
	}
	for _, x := range []struct {
		name string
		h    *HTTPRoute
	}{{"httpRoute", s.HTTPRoute}, {"http2Route", s.HTTP2Route}} {
		name, h := x.name, x.h
		if h == nil {
			continue
		}
		f := "spec." + name
		m := h.Match
		if n := countSet(m.Prefix != "", m.Path != nil); n != 1 {
			v.fail(f+".match", "exactly one of prefix, path is required, got %d", n)
		}
		if m.Prefix != "" && !strings.HasPrefix(m.Prefix, "/") {
			v.fail(f+".match.prefix", "must start with /, got %q", m.Prefix)
		}
		v.pathMatch(f+".match.path", m.Path)
		if m.Method != "" {
			v.oneOf(f+".match.method", m.Method, httpMethods...)
		}
		v.headerMatches(f+".match.headers", m.Headers)
		v.action(f+".action", h.Action)
		if p := h.RetryPolicy; p != nil {
			v.retry(f+".retryPolicy", p.MaxRetries, p.PerRetryTimeout, map[string][]string{
				"httpRetryEvents": p.HTTPRetryEvents, "tcpRetryEvents": p.TCPRetryEvents,
			})
		}
		v.routeTimeout(f+".timeout", h.Timeout)
	}
}

func (v *validator) headerMatches(field string, ms []MetadataMatch) {
	if len(ms) > 10 {
		v.fail(field, "at most 10 entries, got %d", len(ms))
	}
	for i, m := range ms {
		f := fmt.Sprintf("%s[%d]", field, i)
		if m.Name == "" {
			v.fail(f+".name", "required")
		}
		if m.Match == nil {
			continue
		}
		if n := countSet(m.Match.Exact != "", m.Match.Prefix != "", m.Match.Suffix != "", m.Match.Regex != ""); n != 1 {
			v.fail(f+".match", "exactly one of exact, prefix, suffix, regex is required, got %d", n)
		}
		if m.Match.Regex != "" {
			if err := checkRegex(m.Match.Regex); err != nil {
				v.fail(f+".match.regex", "invalid regular expression: %v", err)
			}
		}
	}
}

// MaxWeightedTargets is the most targets a route action may have (as App Mesh).
const MaxWeightedTargets = 10

func (v *validator) action(field string, a RouteAction) {
	f := field + ".weightedTargets"
	if len(a.WeightedTargets) == 0 {
		v.fail(f, "required: at least one {virtualNode, weight}")
		return
	}
	if len(a.WeightedTargets) > MaxWeightedTargets {
		v.fail(f, "at most %d targets, got %d", MaxWeightedTargets, len(a.WeightedTargets))
	}
	sum := 0
	seen := map[string]bool{}
	for i, t := range a.WeightedTargets {
		g := fmt.Sprintf("%s[%d]", f, i)
		v.ref(g+".virtualNode", KindVirtualNode, t.VirtualNode)
		if seen[t.VirtualNode] && t.VirtualNode != "" {
			v.fail(g+".virtualNode", "duplicate target %q", t.VirtualNode)
		}
		seen[t.VirtualNode] = true
		if t.Weight < 0 || t.Weight > 100 {
			v.fail(g+".weight", "must be 0..100, got %d", t.Weight)
		}
		sum += t.Weight
		v.port(g+".port", t.Port, false)
	}
	if sum == 0 {
		v.fail(f, "weights are all 0: at least one target needs a positive weight")
	}
}

func (v *validator) retry(field string, maxRetries int, perTry Duration, events map[string][]string) {
	if maxRetries < 0 || maxRetries > 100 {
		v.fail(field+".maxRetries", "must be 0..100, got %d", maxRetries)
	}
	v.duration(field+".perRetryTimeout", perTry, true)
	allowed := map[string][]string{"grpcRetryEvents": GRPCRetryEvents, "httpRetryEvents": HTTPRetryEvents, "tcpRetryEvents": TCPRetryEvents}
	total := 0
	for _, name := range []string{"grpcRetryEvents", "httpRetryEvents", "tcpRetryEvents"} {
		evs, ok := events[name]
		if !ok {
			continue
		}
		total += len(evs)
		seen := map[string]bool{}
		for i, e := range evs {
			g := fmt.Sprintf("%s.%s[%d]", field, name, i)
			v.oneOf(g, e, allowed[name]...)
			if seen[e] {
				v.fail(g, "duplicate event %q", e)
			}
			seen[e] = true
		}
	}
	if total == 0 {
		names := []string{}
		for _, n := range []string{"grpcRetryEvents", "httpRetryEvents", "tcpRetryEvents"} {
			if _, ok := events[n]; ok {
				names = append(names, n)
			}
		}
		v.fail(field, "at least one retry event is required (%s)", strings.Join(names, ", "))
	}
}

func (v *validator) virtualService(s *VirtualServiceSpec) {
	p := s.Provider
	if p == nil {
		v.fail("spec.provider", "required: a virtualRouter or a virtualNode that provides the service")
		return
	}
	switch countSet(p.VirtualRouter != nil, p.VirtualNode != nil) {
	case 0:
		v.fail("spec.provider", "required: one of virtualRouter, virtualNode")
	case 2:
		v.fail("spec.provider", "exactly one of virtualRouter, virtualNode is allowed, got both")
	}
	if r := p.VirtualRouter; r != nil {
		v.ref("spec.provider.virtualRouter.virtualRouterName", KindVirtualRouter, r.VirtualRouterName)
		if r.VirtualNodeName != "" {
			v.fail("spec.provider.virtualRouter.virtualNodeName", "not allowed in a virtualRouter provider; use provider.virtualNode")
		}
	}
	if n := p.VirtualNode; n != nil {
		v.ref("spec.provider.virtualNode.virtualNodeName", KindVirtualNode, n.VirtualNodeName)
		if n.VirtualRouterName != "" {
			v.fail("spec.provider.virtualNode.virtualRouterName", "not allowed in a virtualNode provider; use provider.virtualRouter")
		}
	}
}

func (v *validator) virtualGateway(s *VirtualGatewaySpec) {
	if len(s.Listeners) == 0 {
		v.fail("spec.listeners", "required: at least one listener")
	}
	ports := map[int]bool{}
	for i, l := range s.Listeners {
		f := fmt.Sprintf("spec.listeners[%d]", i)
		v.portMapping(f+".portMapping", l.PortMapping, ports, ProtocolHTTP, ProtocolHTTP2, ProtocolGRPC)
		v.healthCheck(f+".healthCheck", l.HealthCheck)
	}
	if s.Address != "" && net.ParseIP(s.Address) == nil && ValidName(KindVirtualService, s.Address) != "" {
		v.fail("spec.address", "must be an IP address or a host name (no port), got %q", s.Address)
	}
	if s.MaxRequestBytes < 0 {
		v.fail("spec.maxRequestBytes", "must not be negative, got %d", s.MaxRequestBytes)
	}
}

func (v *validator) gatewayRoute(s *GatewayRouteSpec) {
	v.ref("spec.virtualGatewayName", KindVirtualGateway, s.VirtualGatewayName)
	if s.Priority != nil {
		v.intRange("spec.priority", int64(*s.Priority), 0, 1000)
	}
	if n := countSet(s.HTTPRoute != nil, s.HTTP2Route != nil, s.GRPCRoute != nil); n != 1 {
		v.fail("spec", "exactly one of httpRoute, http2Route, grpcRoute is required, got %d", n)
	}
	for _, x := range []struct {
		name string
		h    *GatewayHTTPRoute
	}{{"httpRoute", s.HTTPRoute}, {"http2Route", s.HTTP2Route}} {
		name, h := x.name, x.h
		if h == nil {
			continue
		}
		f := "spec." + name
		m := h.Match
		switch n := countSet(m.Prefix != "", m.Path != nil); {
		case n != 1:
			v.fail(f+".match", "exactly one of prefix, path is required (use prefix: / to match everything), got %d", n)
		case m.Prefix != "" && !strings.HasPrefix(m.Prefix, "/"):
			v.fail(f+".match.prefix", "must start with / (use / to match everything), got %q", m.Prefix)
		}
		v.pathMatch(f+".match.path", m.Path)
		if m.Method != "" {
			v.oneOf(f+".match.method", m.Method, httpMethods...)
		}
		v.hostnameMatch(f+".match.hostname", m.Hostname)
		v.headerMatches(f+".match.headers", m.Headers)
		if len(m.QueryParameters) > 10 {
			v.fail(f+".match.queryParameters", "at most 10 entries, got %d", len(m.QueryParameters))
		}
		for i, q := range m.QueryParameters {
			if q.Name == "" {
				v.fail(fmt.Sprintf("%s.match.queryParameters[%d].name", f, i), "required")
			}
		}
		v.port(f+".match.port", m.Port, false)
		v.ref(f+".action.target.virtualService.virtualServiceName", KindVirtualService, h.Action.Target.VirtualService.VirtualServiceName)
		v.port(f+".action.target.port", h.Action.Target.Port, false)
		if h.Action.Target.VirtualService.ClientPolicy != nil {
			v.fail(f+".action.target.virtualService.clientPolicy", "not allowed on a gateway route's target")
		}
		if rw := h.Action.Rewrite; rw != nil {
			rf := f + ".action.rewrite"
			if rw.Prefix != nil && rw.Path != nil {
				v.fail(rf, "at most one of prefix, path is allowed, got both")
			}
			if p := rw.Prefix; p != nil {
				if m.Prefix == "" {
					v.fail(rf+".prefix", "needs match.prefix: only a matched prefix can be rewritten")
				}
				if p.DefaultPrefix != "" {
					v.oneOf(rf+".prefix.defaultPrefix", p.DefaultPrefix, Enabled, Disabled)
				}
				if n := countSet(p.DefaultPrefix != "", p.Value != ""); n != 1 {
					v.fail(rf+".prefix", "exactly one of defaultPrefix, value is required, got %d", n)
				}
				if p.Value != "" && (!strings.HasPrefix(p.Value, "/") || !strings.HasSuffix(p.Value, "/")) {
					v.fail(rf+".prefix.value", "must start and end with /, got %q", p.Value)
				}
			}
			if p := rw.Path; p != nil && !strings.HasPrefix(p.Exact, "/") {
				v.fail(rf+".path.exact", "must start with /, got %q", p.Exact)
			}
			v.hostnameRewrite(rf+".hostname", rw.Hostname)
		}
	}
	if g := s.GRPCRoute; g != nil {
		f := "spec.grpcRoute"
		if strings.ContainsAny(g.Match.ServiceName, "/ ") {
			v.fail(f+".match.serviceName", "must be a fully qualified service name like proto.echo.EchoService, got %q", g.Match.ServiceName)
		}
		v.hostnameMatch(f+".match.hostname", g.Match.Hostname)
		v.headerMatches(f+".match.metadata", g.Match.Metadata)
		v.port(f+".match.port", g.Match.Port, false)
		v.ref(f+".action.target.virtualService.virtualServiceName", KindVirtualService, g.Action.Target.VirtualService.VirtualServiceName)
		v.port(f+".action.target.port", g.Action.Target.Port, false)
		if g.Action.Target.VirtualService.ClientPolicy != nil {
			v.fail(f+".action.target.virtualService.clientPolicy", "not allowed on a gateway route's target")
		}
		if rw := g.Action.Rewrite; rw != nil {
			v.hostnameRewrite(f+".action.rewrite.hostname", rw.Hostname)
		}
	}
}

var httpMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

func (v *validator) pathMatch(field string, p *HeaderMatch) {
	if p == nil {
		return
	}
	if n := countSet(p.Exact != "", p.Regex != ""); n != 1 || p.Prefix != "" || p.Suffix != "" {
		v.fail(field, "exactly one of exact, regex is required")
	}
	if p.Exact != "" && !strings.HasPrefix(p.Exact, "/") {
		v.fail(field+".exact", "must start with /, got %q", p.Exact)
	}
	if p.Regex != "" {
		if err := checkRegex(p.Regex); err != nil {
			v.fail(field+".regex", "invalid regular expression: %v", err)
		}
	}
}

func (v *validator) hostnameMatch(field string, h *HostnameMatch) {
	if h == nil {
		return
	}
	if n := countSet(h.Exact != "", h.Suffix != ""); n != 1 {
		v.fail(field, "exactly one of exact, suffix is required, got %d", n)
	}
	for _, x := range []struct{ f, v string }{{"exact", h.Exact}, {"suffix", h.Suffix}} {
		if strings.ContainsAny(x.v, ":/ ") {
			v.fail(field+"."+x.f, "must be a host name without port or scheme, got %q", x.v)
		}
	}
}

func (v *validator) hostnameRewrite(field string, h *HostnameRewrite) {
	if h != nil && h.DefaultTargetHostname != "" {
		v.oneOf(field+".defaultTargetHostname", h.DefaultTargetHostname, Enabled, Disabled)
	}
}

func (v *validator) program(field string, p Program) {
	switch countSet(p.Package != "", len(p.Command) > 0) {
	case 0:
		v.fail(field, "required: one of package (a Go package to build, e.g. ./cmd/echo-server) or command")
	case 2:
		v.fail(field, "exactly one of package, command is allowed, got both")
	}
	if p.Package != "" && strings.ContainsAny(p.Package, " \t\n") {
		v.fail(field+".package", "must be a Go package path, got %q", p.Package)
	}
	if len(p.Command) > 0 && p.Command[0] == "" {
		v.fail(field+".command[0]", "required: the program to run")
	}
}

func (v *validator) env(field string, env map[string]string) {
	for k := range env {
		if !envKeyRE.MatchString(k) {
			v.fail(mapPath(field, k), "invalid environment variable name %q", k)
		}
	}
}

func (v *validator) service(s *ServiceSpec) {
	v.ref("spec.virtualNode", KindVirtualNode, s.VirtualNode)
	v.program("spec.program", s.Program)
	v.intRange("spec.desiredCount", int64(s.DesiredCount), 1, 1000)
	v.port("spec.port", s.Port, true)
	v.env("spec.env", s.Env)
	if !strings.HasPrefix(s.MetricsPath, "/") {
		v.fail("spec.metricsPath", "must start with /, got %q", s.MetricsPath)
	}
}

func (v *validator) taskSet(f string, s *TaskSetSpec, full bool) {
	if full {
		v.ref(f+".service", KindService, s.Service)
		if len(s.Command) == 0 {
			v.fail(f+".command", "required: the program and its arguments")
		}
		v.port(f+".port", s.Port, true)
	} else {
		if s.Service != "" {
			v.ref(f+".service", KindService, s.Service)
		}
		v.port(f+".port", s.Port, false)
	}
	if s.VirtualNode != "" {
		v.ref(f+".virtualNode", KindVirtualNode, s.VirtualNode)
	}
	if len(s.Command) > 0 && s.Command[0] == "" {
		v.fail(f+".command[0]", "required: the program to run")
	}
	v.intRange(f+".desiredCount", int64(s.DesiredCount), 0, 1000)
	if s.Revision < 0 {
		v.fail(f+".revision", "must not be negative, got %d", s.Revision)
	}
	v.env(f+".env", s.Env)
}

func (v *validator) rollout(s *RolloutSpec) {
	v.ref("spec.service", KindService, s.Service)
	if s.Route != "" {
		v.ref("spec.route", KindRoute, s.Route)
	}
	v.taskSet("spec.target", &s.Target, false)
	if err := CheckSteps("spec.steps", s.Steps); err != nil {
		var e *Error
		errors.As(err, &e)
		v.fail(e.Field, "%s", e.Message)
	}
	if s.IntervalMillis < 0 {
		v.fail("spec.intervalMillis", "must not be negative, got %d", s.IntervalMillis)
	}
	if s.TimeoutMillis <= 0 {
		v.fail("spec.timeoutMillis", "must be positive, got %d", s.TimeoutMillis)
	}
	if s.AckTimeoutMillis < 0 || (s.TimeoutMillis > 0 && s.AckTimeoutMillis > s.TimeoutMillis) {
		v.fail("spec.ackTimeoutMillis", "must be within 0..timeoutMillis (%d), got %d", s.TimeoutMillis, s.AckTimeoutMillis)
	}
	if s.OnStalledClient != "" {
		v.oneOf("spec.onStalledClient", s.OnStalledClient, StalledPause, StalledProceed, StalledRollback)
	}
	if g := s.Gates; !(g.MinSuccessRate >= 0 && g.MinSuccessRate <= 1) {
		v.fail("spec.gates.minSuccessRate", "must be 0..1, got %v", g.MinSuccessRate)
	}
	if !(s.Gates.MaxP99Millis >= 0) {
		v.fail("spec.gates.maxP99Millis", "must not be negative, got %v", s.Gates.MaxP99Millis)
	}
	if s.Gates.MinRequests < 0 {
		v.fail("spec.gates.minRequests", "must not be negative, got %d", s.Gates.MinRequests)
	}
}

// checkRegex checks re as its users compile it: grpc-go anchors a matcher's
// regex as ^(?:re)$, one nesting level deeper than re alone, so a regex at
// Go's nesting limit would pass here and be NACKed by every client.
func checkRegex(re string) error {
	if _, err := regexp.Compile(re); err != nil {
		return err
	}
	_, err := regexp.Compile("^(?:" + re + ")$")
	return err
}
