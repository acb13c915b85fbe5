package xds

import (
	"cmp"
	"net"
	"slices"
	"strconv"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointpb "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

// locality is the one locality every endpoint is in, the one clients'
// bootstraps name too. grpc-go NACKs an EDS response with a locality that
// has no ID, so it names one.
func locality() *corepb.Locality {
	return &corepb.Locality{Region: bootstrap.LocalRegion, Zone: bootstrap.LocalZone}
}

// loadAssignment selects the serving endpoints (RUNNING, HEALTHY, not
// draining) of the node's mesh that its service discovery selects, in one
// locality of weight 1 (grpc-go drops a locality of weight 0 and rejects
// one without an ID). A node that
// selects nothing gets an empty assignment, so its cluster still resolves.
func (t *translator) loadAssignment(vn *mesh.Resource, spec *mesh.VirtualNodeSpec, name string) *endpointpb.ClusterLoadAssignment {
	cla := &endpointpb.ClusterLoadAssignment{ClusterName: name}
	eps := t.serving(vn)
	if len(eps) == 0 {
		return cla
	}
	slices.SortFunc(eps, func(a, b *mesh.Endpoint) int {
		return cmp.Or(cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port), cmp.Compare(a.ID, b.ID))
	})
	loc := &endpointpb.LocalityLbEndpoints{Locality: locality(), LoadBalancingWeight: wrapperspb.UInt32(1)}
	seen := map[string]bool{}
	for _, e := range eps {
		key := net.JoinHostPort(e.Address, strconv.Itoa(e.Port))
		if seen[key] {
			continue // two registrations of one address: serve it once
		}
		seen[key] = true
		loc.LbEndpoints = append(loc.LbEndpoints, lbEndpoint(e.Address, e.Port))
	}
	cla.Endpoints = []*endpointpb.LocalityLbEndpoints{loc}
	return cla
}
