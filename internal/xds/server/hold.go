package server

import (
	"context"
	"time"

	"github.com/gmesh-dev/gmesh/internal/xds"
)

// PublishSubscribeFirst publishes first, when in gives weight to a target
// that clients are not subscribed to yet (a route edited to 50/50 over a
// node it did not list before, judged against prev, the resources published
// last), the same config with those targets at weight 0 but pinned
// (xds.Input.Hold) under in.Revision, and waits up to wait for every client
// to ACK it and subscribe to the new targets' endpoints: grpc-go fails calls
// that pick a cluster it has not subscribed to ("unknown cluster
// selected"). The caller then publishes in itself under the same revision.
// It does nothing when prev is nil or no target is new. Rollouts never need
// it (they add a target at weight 0 first); a plain `gmesh apply` or
// `kubectl apply` does. Both control planes (local and Kubernetes) call it.
func (s *Server) PublishSubscribeFirst(ctx context.Context, in xds.Input, prev *xds.Resources, wait time.Duration) {
	if prev == nil {
		return
	}
	routed := prev.RoutedClusters()
	hold := map[string]bool{}
	for c := range xds.WeightedTargets(in) {
		if !routed[c] {
			hold[c] = true
		}
	}
	if len(hold) == 0 {
		return
	}
	in.Hold = hold
	inter, _ := xds.Translate(in) // the caller reports the problems
	if inter == nil {
		return
	}
	if err := s.Publish(inter, in.Revision); err != nil {
		s.log.Warn("publish of the subscribe-first step failed", "err", err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := s.WaitConverged(wctx, xds.RouteType, in.Revision); err != nil {
		s.log.Warn("clients did not ACK the subscribe-first step in time; giving the new targets weight anyway", "revision", in.Revision, "err", err)
		return
	}
	// The ACK comes as grpc-go parses the routes; its ACK of the new
	// clusters' endpoints shows it has applied them and fetched their
	// endpoints (EDS resource names are the cluster names).
	names := make([]string, 0, len(hold))
	for c := range hold {
		names = append(names, c)
	}
	if err := s.WaitSubscribed(wctx, xds.EndpointType, names); err != nil {
		s.log.Warn("clients did not subscribe to the new targets in time; giving them weight anyway", "revision", in.Revision, "err", err)
	}
}
