package appmesh

import (
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/gmesh-dev/gmesh/api/appmesh/v1beta2"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Reasons of the fields gmesh accepts but does not act on; one place so
// that the docs and the status say the same.
const (
	whyEnvoyOnly       = "an Envoy setting: proxyless gRPC clients have no proxy to apply it to"
	whyLogging         = "access logs were Envoy's: proxyless clients and servers log through the application (gmesh's gateway logs with its own format)"
	whyCloudMap        = "on Kubernetes a node's endpoints are the Ready pods its podSelector selects; Cloud Map is not queried and its attributes are not matched"
	whyDNS             = "on Kubernetes a node's endpoints are the Ready pods its podSelector selects; the DNS name is not resolved"
	whyHealthCheck     = "on Kubernetes a pod serves (is in EDS) while it is Ready: give the pod a readinessProbe (grpc, httpGet or tcpSocket) with these settings; gmesh keeps the policy in its model"
	whyTLSPermissive   = "grpc-go's xDS server cannot serve TLS and plain text on one port: a PERMISSIVE listener serves plain text (its pods still get workload certificates, so it can turn STRICT)"
	whyTLSCertificate  = "gmesh issues each pod's certificate from the mesh CA, its only identity the pod's SPIFFE ID (spiffe://MESH.gmesh.local/ns/NS/sa/SA/vn/NODE): this source is not read"
	whyTLSTrust        = "gmesh trusts only the mesh CA, which issues every workload's certificate: this source is not read"
	whyGatewayTLS      = "gmesh's gateway serves and calls in plain text (its pods get no workload certificate)"
	whyMeshOwner       = "a mesh shared across AWS accounts has no meaning in a cluster"
	whyIPPreference    = "clients dial the pod IPs Kubernetes assigns, of whichever family they are"
	whyDropAll         = "gmesh serves only the mesh's virtual services over xDS, but an application can still dial other addresses directly: enforce egress with a NetworkPolicy"
	whyBackendGroups   = "gmesh does not limit which virtual services a node may call (backends are checked as references only): the group's services stay reachable, list them under spec.backends to have them checked"
	whyLaterListeners  = "gmesh serves a virtual node on its first listener: endpoints carry that port, and outlier detection and timeouts come from it"
	whyTCPTimeout      = "proxyless gRPC clients have no TCP listeners"
	whyMeshRefUID      = "the UID belongs to another cluster's Mesh: gmesh matches meshRef by name"
	whyDNSResponseType = "an Envoy DNS setting: gmesh hands DNS names to the client's resolver"
)

func (c *converter) virtualNode(vn *v1beta2.VirtualNode) *Result {
	r, e := c.start(Object{Kind: mesh.KindVirtualNode, Namespace: vn.Namespace, Name: vn.Name}, vn.Finalizers)
	c.checkMeshRefUID(r, e, vn.Spec.MeshRef)
	spec := &mesh.VirtualNodeSpec{}
	for i, l := range vn.Spec.Listeners {
		f := fmt.Sprintf("spec.listeners[%d]", i)
		ml := mesh.Listener{PortMapping: portMapping(l.PortMapping)}
		if l.HealthCheck != nil {
			ml.HealthCheck = healthCheck(l.HealthCheck.Protocol, l.HealthCheck.Path, l.HealthCheck.Port,
				l.HealthCheck.IntervalMillis, l.HealthCheck.TimeoutMillis, l.HealthCheck.HealthyThreshold, l.HealthCheck.UnhealthyThreshold)
			r.report(f+".healthCheck", "%s", whyHealthCheck)
		}
		if od := l.OutlierDetection; od != nil {
			ml.OutlierDetection = &mesh.OutlierDetection{
				MaxServerErrors:      int(od.MaxServerErrors),
				Interval:             duration(od.Interval),
				BaseEjectionDuration: duration(od.BaseEjectionDuration),
				MaxEjectionPercent:   int(od.MaxEjectionPercent),
			}
		}
		if t := l.Timeout; t != nil {
			mt := &mesh.ListenerTimeout{HTTP: httpTimeout(t.HTTP), HTTP2: httpTimeout(t.HTTP2)}
			if t.GRPC != nil {
				mt.GRPC = grpcTimeout(t.GRPC)
			}
			if t.TCP != nil {
				r.report(f+".timeout.tcp", "%s", whyTCPTimeout)
			}
			if mt.GRPC != nil || mt.HTTP != nil || mt.HTTP2 != nil {
				ml.Timeout = mt
			}
		}
		if l.ConnectionPool != nil {
			r.report(f+".connectionPool", "%s", whyEnvoyOnly)
		}
		if tls := l.TLS; tls != nil {
			ml.TLS = listenerTLS(r, f+".tls", tls)
		}
		if i > 0 {
			r.report(f, "%s", whyLaterListeners)
		}
		spec.Listeners = append(spec.Listeners, ml)
	}

	// Endpoints: the pods the podSelector selects (only the Ready ones
	// serve).
	sd := vn.Spec.ServiceDiscovery
	if vn.Spec.PodSelector != nil {
		if _, err := metav1.LabelSelectorAsSelector(vn.Spec.PodSelector); err != nil {
			r.fail("spec.podSelector", v1beta2.ReasonInvalidValue, "%v", err)
		}
		spec.ServiceDiscovery = &mesh.ServiceDiscovery{Registry: &mesh.RegistryDiscovery{ServiceName: r.Name}}
		if sd != nil && sd.AWSCloudMap != nil {
			r.report("spec.serviceDiscovery.awsCloudMap", "%s", whyCloudMap)
		}
		if sd != nil && sd.DNS != nil {
			r.report("spec.serviceDiscovery.dns", "%s", whyDNS)
		}
		if len(spec.Listeners) > 0 && r.Name != "" && r.Mesh != "" {
			c.podEndpoints(r, types.NamespacedName{Namespace: vn.Namespace, Name: vn.Name}, spec.Listeners[0].PortMapping.Port)
		}
	} else if sd != nil {
		switch {
		case sd.DNS != nil:
			spec.ServiceDiscovery = &mesh.ServiceDiscovery{DNS: &mesh.DNSDiscovery{Hostname: sd.DNS.Hostname}}
		case sd.AWSCloudMap != nil:
			cm := &mesh.RegistryDiscovery{NamespaceName: sd.AWSCloudMap.NamespaceName, ServiceName: sd.AWSCloudMap.ServiceName}
			for _, a := range sd.AWSCloudMap.Attributes {
				cm.Attributes = append(cm.Attributes, mesh.Attribute{Key: a.Key, Value: a.Value})
			}
			spec.ServiceDiscovery = &mesh.ServiceDiscovery{AWSCloudMap: cm}
			r.report("spec.serviceDiscovery.awsCloudMap", "nothing registers Cloud Map instances on Kubernetes: give the node a podSelector; until then it selects endpoints registered with gmesh under this service name and attributes")
		}
	} else if len(spec.Listeners) > 0 {
		r.report("spec.podSelector", "absent: the node selects no pods, so it has no endpoints")
	}
	if sd != nil && sd.DNS != nil && sd.DNS.ResponseType != nil {
		r.report("spec.serviceDiscovery.dns.responseType", "%s", whyDNSResponseType)
	}

	for i, b := range vn.Spec.Backends {
		f := fmt.Sprintf("spec.backends[%d].virtualService", i)
		var name string
		switch vs := b.VirtualService; {
		case vs.VirtualServiceRef != nil:
			name = c.resolveRef(r, f+".virtualServiceRef", mesh.KindVirtualService, e, vs.VirtualServiceRef.Namespace, vs.VirtualServiceRef.Name)
		case vs.VirtualServiceARN != nil:
			name = c.resolveARN(r, f+".virtualServiceARN", mesh.KindVirtualService, e, *vs.VirtualServiceARN)
		default:
			r.fail(f, v1beta2.ReasonInvalidValue, "one of virtualServiceRef, virtualServiceARN is required")
		}
		var policy *mesh.ClientPolicy
		if cp := b.VirtualService.ClientPolicy; cp != nil && cp.TLS != nil {
			policy = &mesh.ClientPolicy{TLS: clientTLS(r, f+".clientPolicy.tls", cp.TLS)}
		}
		if name == "" {
			continue
		}
		if dup := slicesIndexBackend(spec.Backends, name); dup >= 0 {
			r.fail(f, v1beta2.ReasonInvalidValue, "duplicate backend: virtual service %q is already spec.backends[%d]", name, dup)
			continue
		}
		spec.Backends = append(spec.Backends, mesh.Backend{VirtualService: &mesh.VirtualServiceBackend{VirtualServiceName: name, ClientPolicy: policy}})
	}
	if len(vn.Spec.BackendGroups) > 0 {
		r.report("spec.backendGroups", "%s", whyBackendGroups)
	}
	if bd := vn.Spec.BackendDefaults; bd != nil && bd.ClientPolicy != nil && bd.ClientPolicy.TLS != nil {
		spec.BackendDefaults = &mesh.BackendDefaults{ClientPolicy: &mesh.ClientPolicy{
			TLS: clientTLS(r, "spec.backendDefaults.clientPolicy.tls", bd.ClientPolicy.TLS),
		}}
	}
	if vn.Spec.Logging != nil {
		r.report("spec.logging", "%s", whyLogging)
	}
	if len(r.Errors) == 0 {
		res := newResource(mesh.KindVirtualNode, r.Mesh, r.Name, spec)
		if r.validate(res) {
			r.Resources = append(r.Resources, res)
		}
	}
	return r.Result
}

// podEndpoints adds a node's endpoints: its Ready pods serving, its
// starting pods listening but not serving (Health UNKNOWN), its
// terminating pods draining. A pod IP is one endpoint, the first state
// found in that order.
func (c *converter) podEndpoints(r result, node types.NamespacedName, port int) {
	seen := map[netip.Addr]bool{}
	for _, g := range []struct {
		ips      []string
		state    mesh.TaskState
		health   mesh.HealthStatus
		draining bool
	}{
		{c.in.ReadyPodIPs[node], mesh.TaskRunning, mesh.HealthHealthy, false},
		{c.in.StartingPodIPs[node], mesh.TaskRunning, mesh.HealthUnknown, false},
		{c.in.TerminatingPodIPs[node], mesh.TaskStopping, mesh.HealthUnknown, true},
	} {
		for _, ip := range g.ips {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				r.fail("spec.podSelector", v1beta2.ReasonInvalidValue, "a selected pod's IP %q is not an IP address", ip)
				continue
			}
			if seen[a] {
				continue
			}
			seen[a] = true
			r.Endpoints = append(r.Endpoints, &mesh.Endpoint{
				ID:       fmt.Sprintf("%s/%s/%s", node.Namespace, node.Name, a),
				Mesh:     r.Mesh,
				Service:  r.Name,
				Address:  a.String(),
				Port:     port,
				State:    g.state,
				Health:   g.health,
				Draining: g.draining,
			})
		}
	}
}

func slicesIndexBackend(bs []mesh.Backend, name string) int {
	for i, b := range bs {
		if b.VirtualService != nil && b.VirtualService.VirtualServiceName == name {
			return i
		}
	}
	return -1
}

// checkMeshRefUID reports a meshRef whose UID is not its Mesh's: a
// manifest exported from another cluster.
func (c *converter) checkMeshRefUID(r result, e *entry, ref *v1beta2.MeshReference) {
	if ref != nil && ref.UID != "" && e.meshObj != nil && e.meshObj.UID != ref.UID {
		r.report("spec.meshRef.uid", "%s", whyMeshRefUID)
	}
}

// listenerTLS converts a node's listener TLS into gmesh's, as `gmesh
// apply` takes it: the mode and the validation's subject alternative
// names. The certificate and trust sources are reported, not converted:
// App Mesh requires them, and gmesh issues and trusts only the mesh CA's
// certificates. What gmesh's model refuses (STRICT on a listener that is
// not grpc, TLS on a later listener, SANs on a listener that is not
// STRICT or that are not SPIFFE IDs) mesh.Validate refuses, on the same
// field (validate).
func listenerTLS(r result, field string, t *v1beta2.ListenerTLS) *mesh.ListenerTLS {
	out := &mesh.ListenerTLS{Mode: string(t.Mode)}
	if t.Mode == v1beta2.ListenerTLSModePermissive {
		r.report(field+".mode", "%s", whyTLSPermissive)
	}
	if c := t.Certificate; c.ACM != nil || c.File != nil || c.SDS != nil {
		r.report(field+".certificate", "%s", whyTLSCertificate)
	}
	if v := t.Validation; v != nil {
		if v.Trust.File != nil || v.Trust.SDS != nil {
			r.report(field+".validation.trust", "%s", whyTLSTrust)
		}
		if v.SubjectAlternativeNames != nil {
			out.Validation = &mesh.TLSValidation{SubjectAlternativeNames: subjectAltNames(v.SubjectAlternativeNames)}
		}
	}
	return out
}

// clientTLS converts a client TLS policy into gmesh's: enforce (absent:
// true, as in App Mesh), ports and the validation's subject alternative
// names (which mesh.Validate refuses for now: a caller checks the SPIFFE
// ID of the node it is routed to). The certificate and trust sources are
// reported, as for a listener.
func clientTLS(r result, field string, p *v1beta2.ClientPolicyTLS) *mesh.ClientPolicyTLS {
	out := &mesh.ClientPolicyTLS{Enforce: p.Enforce}
	for _, port := range p.Ports {
		out.Ports = append(out.Ports, int(port))
	}
	if c := p.Certificate; c != nil && (c.File != nil || c.SDS != nil) {
		r.report(field+".certificate", "%s", whyTLSCertificate)
	}
	if t := p.Validation.Trust; t.ACM != nil || t.File != nil || t.SDS != nil {
		r.report(field+".validation.trust", "%s", whyTLSTrust)
	}
	if sans := p.Validation.SubjectAlternativeNames; sans != nil {
		out.Validation = &mesh.TLSValidation{SubjectAlternativeNames: subjectAltNames(sans)}
	}
	return out
}

func subjectAltNames(sans *v1beta2.SubjectAlternativeNames) *mesh.SubjectAlternativeNames {
	out := &mesh.SubjectAlternativeNames{}
	if sans.Match != nil {
		for _, s := range sans.Match.Exact {
			out.Match.Exact = append(out.Match.Exact, deref(s, ""))
		}
	}
	return out
}

// gatewayListenerTLS refuses a STRICT gateway listener (gmesh's gateway
// would serve it in plain text) and reports a PERMISSIVE one.
func gatewayListenerTLS(r result, field, mode string) {
	switch mode {
	case string(v1beta2.ListenerTLSModeStrict):
		r.fail(field+".mode", v1beta2.ReasonUnsupported, "STRICT: %s and would serve this listener in plain text; set mode PERMISSIVE or DISABLED, or remove tls", whyGatewayTLS)
	case string(v1beta2.ListenerTLSModePermissive):
		r.report(field, "%s: PERMISSIVE lets plain text through, which is what is served", whyGatewayTLS)
	}
}

// gatewayClientTLS refuses an enforced client TLS policy of a gateway
// (App Mesh's default) and reports one that is not enforced.
func gatewayClientTLS(r result, field string, enforce *bool) {
	if enforce == nil || *enforce {
		r.fail(field+".enforce", v1beta2.ReasonUnsupported, "TLS is enforced (App Mesh's default when enforce is absent), but %s and would call in plain text; set enforce: false or remove tls", whyGatewayTLS)
		return
	}
	r.report(field, "%s: the policy is not enforced, so plain text is used", whyGatewayTLS)
}

func portMapping(pm v1beta2.PortMapping) mesh.PortMapping {
	return mesh.PortMapping{Port: int(pm.Port), Protocol: string(pm.Protocol)}
}

func healthCheck[P ~string](protocol P, path *string, port *v1beta2.PortNumber, interval, timeout, healthy, unhealthy int64) *mesh.HealthCheck {
	hc := &mesh.HealthCheck{
		Protocol:           string(protocol),
		Path:               deref(path, ""),
		IntervalMillis:     interval,
		TimeoutMillis:      timeout,
		HealthyThreshold:   int(healthy),
		UnhealthyThreshold: int(unhealthy),
	}
	if port != nil {
		hc.Port = int(*port)
	}
	if hc.Protocol != mesh.ProtocolHTTP && hc.Protocol != mesh.ProtocolHTTP2 {
		hc.Path = "" // App Mesh ignored it for other protocols
	}
	return hc
}

func duration(d v1beta2.Duration) mesh.Duration {
	return mesh.Duration{Value: d.Value, Unit: string(d.Unit)}
}

func optDuration(d *v1beta2.Duration) *mesh.Duration {
	if d == nil {
		return nil
	}
	md := duration(*d)
	return &md
}

func httpTimeout(t *v1beta2.HTTPTimeout) *mesh.RouteTimeout {
	if t == nil {
		return nil
	}
	return &mesh.RouteTimeout{PerRequest: optDuration(t.PerRequest), Idle: optDuration(t.Idle)}
}

func grpcTimeout(t *v1beta2.GRPCTimeout) *mesh.RouteTimeout {
	if t == nil {
		return nil
	}
	return &mesh.RouteTimeout{PerRequest: optDuration(t.PerRequest), Idle: optDuration(t.Idle)}
}
