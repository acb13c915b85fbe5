package xds

import (
	"fmt"
	"time"

	clusterpb "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// ConnectTimeout is every cluster's connect timeout. App Mesh has no such
// field; the value suits loopback and LAN peers.
const ConnectTimeout = 2 * time.Second

// cluster builds a virtual node's cluster and, for a registry-discovered
// node, its load assignment. A node discovered by DNS becomes a LOGICAL_DNS
// cluster with its one host inline (valid for grpc-go and Envoy alike), and
// no EDS resource.
func (t *translator) cluster(vn *mesh.Resource) (*clusterpb.Cluster, *endpointpb.ClusterLoadAssignment, error) {
	spec, ok := vn.Spec.(*mesh.VirtualNodeSpec)
	if !ok || spec == nil {
		return nil, nil, fmt.Errorf("%s: spec is %T, want *mesh.VirtualNodeSpec", vn.Ref(), vn.Spec)
	}
	name := ClusterName(vn.Metadata.Mesh, vn.Metadata.Name)
	c := &clusterpb.Cluster{
		Name:           name,
		ConnectTimeout: durationpb.New(ConnectTimeout),
		LbPolicy:       clusterpb.Cluster_ROUND_ROBIN,
	}
	if spec.TLSMode() == mesh.TLSStrict {
		ts, err := upstreamTLS(vn.Metadata.Mesh, vn.Metadata.Name)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", vn.Ref(), err)
		}
		c.TransportSocket = ts
	}
	if len(spec.Listeners) > 0 {
		od, err := outlierDetection(spec.Listeners[0].OutlierDetection)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: spec.listeners[0].outlierDetection: %w", vn.Ref(), err)
		}
		c.OutlierDetection = od
	}
	if dns := spec.ServiceDiscovery; dns != nil && dns.DNS != nil && dns.Selector() == nil {
		port := 0
		if len(spec.Listeners) > 0 {
			port = spec.Listeners[0].PortMapping.Port
		}
		if dns.DNS.Hostname == "" || port <= 0 {
			return nil, nil, fmt.Errorf("%s: dns discovery needs spec.serviceDiscovery.dns.hostname and a listener port", vn.Ref())
		}
		c.ClusterDiscoveryType = &clusterpb.Cluster_Type{Type: clusterpb.Cluster_LOGICAL_DNS}
		c.LoadAssignment = &endpointpb.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointpb.LocalityLbEndpoints{{
				Locality:            locality(),
				LoadBalancingWeight: wrapperspb.UInt32(1),
				LbEndpoints:         []*endpointpb.LbEndpoint{lbEndpoint(dns.DNS.Hostname, port)},
			}},
		}
		return c, nil, nil
	}
	c.ClusterDiscoveryType = &clusterpb.Cluster_Type{Type: clusterpb.Cluster_EDS}
	c.EdsClusterConfig = &clusterpb.Cluster_EdsClusterConfig{
		EdsConfig:   adsSource(),
		ServiceName: name,
	}
	return c, t.loadAssignment(vn, spec, name), nil
}

// outlierDetection maps App Mesh's policy. Envoy reads consecutive_5xx
// (App Mesh's own meaning of maxServerErrors). grpc-go implements only the
// success-rate and failure-percentage algorithms (gRFC A50), so the policy is
// also expressed as failure-percentage ejection: a host with at least
// maxServerErrors calls in an interval, half or more of them failed, is
// ejected. Success-rate ejection (on by default upstream) is turned off.
func outlierDetection(od *mesh.OutlierDetection) (*clusterpb.OutlierDetection, error) {
	if od == nil {
		return nil, nil
	}
	interval, err := duration(od.Interval)
	if err != nil {
		return nil, fmt.Errorf("interval: %w", err)
	}
	base, err := duration(od.BaseEjectionDuration)
	if err != nil {
		return nil, fmt.Errorf("baseEjectionDuration: %w", err)
	}
	if od.MaxServerErrors < 1 {
		return nil, fmt.Errorf("maxServerErrors %d: must be at least 1", od.MaxServerErrors)
	}
	if od.MaxEjectionPercent < 0 || od.MaxEjectionPercent > 100 {
		return nil, fmt.Errorf("maxEjectionPercent %d: must be 0..100", od.MaxEjectionPercent)
	}
	return &clusterpb.OutlierDetection{
		Consecutive_5Xx:                wrapperspb.UInt32(uint32(od.MaxServerErrors)),
		Interval:                       durationpb.New(interval),
		BaseEjectionTime:               durationpb.New(base),
		MaxEjectionPercent:             wrapperspb.UInt32(uint32(od.MaxEjectionPercent)),
		EnforcingSuccessRate:           wrapperspb.UInt32(0),
		EnforcingFailurePercentage:     wrapperspb.UInt32(100),
		FailurePercentageThreshold:     wrapperspb.UInt32(50),
		FailurePercentageMinimumHosts:  wrapperspb.UInt32(1),
		FailurePercentageRequestVolume: wrapperspb.UInt32(uint32(od.MaxServerErrors)),
	}, nil
}

// duration converts App Mesh's {value, unit}.
func duration(d mesh.Duration) (time.Duration, error) {
	if d.Value < 0 {
		return 0, fmt.Errorf("value %d: must not be negative", d.Value)
	}
	switch d.Unit {
	case "ms":
		return time.Duration(d.Value) * time.Millisecond, nil
	case "s":
		return time.Duration(d.Value) * time.Second, nil
	default:
		return 0, fmt.Errorf("unit %q: want ms or s", d.Unit)
	}
}

func lbEndpoint(host string, port int) *endpointpb.LbEndpoint {
	return &endpointpb.LbEndpoint{
		HostIdentifier: &endpointpb.LbEndpoint_Endpoint{Endpoint: &endpointpb.Endpoint{
			Address: &corepb.Address{Address: &corepb.Address_SocketAddress{SocketAddress: &corepb.SocketAddress{
				Protocol:      corepb.SocketAddress_TCP,
				Address:       host,
				PortSpecifier: &corepb.SocketAddress_PortValue{PortValue: uint32(port)},
			}}},
		}},
		HealthStatus: corepb.HealthStatus_HEALTHY,
	}
}
