package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Variant is one attribution step for rung 3: the echo stack with parts of
// its route and node policy removed, optionally with the translation's pin
// routes stripped (an experiment; see Mesh.PublishWithoutPinRoutes).
type Variant struct {
	Key, Name string
	Edit      func(rs []*mesh.Resource)
	NoPins    bool
}

func noRetry(rs []*mesh.Resource)   { RouteOf(rs).Route().GRPCRoute.RetryPolicy = nil }
func noTimeout(rs []*mesh.Resource) { RouteOf(rs).Route().GRPCRoute.Timeout = nil }
func noOutlier(rs []*mesh.Resource) {
	for _, r := range rs {
		if r.Kind == mesh.KindVirtualNode && strings.HasPrefix(r.Metadata.Name, "echo-server-") {
			for i := range r.VirtualNode().Listeners {
				r.VirtualNode().Listeners[i].OutlierDetection = nil
			}
		}
	}
}

func bare(rs []*mesh.Resource) { noRetry(rs); noTimeout(rs); noOutlier(rs) }

// Variants are the attribution steps, the stack as shipped first.
var Variants = []Variant{
	{Key: "shipped", Name: "echo stack as shipped (retry policy, 2 s timeout, outlier detection, pin routes)", Edit: func([]*mesh.Resource) {}},
	{Key: "no-retry", Name: "without the retry policy", Edit: noRetry},
	{Key: "no-retry-timeout", Name: "without retry policy and timeout", Edit: func(rs []*mesh.Resource) { noRetry(rs); noTimeout(rs) }},
	{Key: "no-policy", Name: "without retry policy, timeout and outlier detection", Edit: bare},
	{Key: "shipped-no-pins", Name: "as shipped, pin routes stripped (experiment: edited translation)", Edit: func([]*mesh.Resource) {}, NoPins: true},
	{Key: "no-policy-no-pins", Name: "without retry/timeout/outlier, pin routes stripped (experiment)", Edit: bare, NoPins: true},
	{Key: "single", Name: "one target at weight 100, no retry/timeout/outlier, no pin routes", Edit: func(rs []*mesh.Resource) {
		bare(rs)
		a := &RouteOf(rs).Route().GRPCRoute.Action
		a.WeightedTargets = a.WeightedTargets[:1]
		a.WeightedTargets[0].Weight = 100
	}, NoPins: true},
}

// ApplyVariant applies v to the running mesh (from the stack at 50/50) and
// waits until every client has ACKed it.
func (m *Mesh) ApplyVariant(ctx context.Context, v Variant) error {
	rs, err := StackResources(50, 50)
	if err != nil {
		return err
	}
	v.Edit(rs)
	if err := m.Apply(ctx, rs); err != nil {
		return err
	}
	if err := m.WaitAll(ctx); err != nil {
		return err
	}
	if v.NoPins {
		return m.PublishWithoutPinRoutes(ctx)
	}
	return nil
}

// WaitRouting polls until c's calls follow the applied route: only version
// 0.9 (a single target) for 50 calls in a row, or both versions (the 50/50
// split), within 10 s. grpc-go ACKs a route before its picker uses it, so
// the ACK alone does not say the measured calls see the variant. Variants
// that change only per-call policy leave the split as it was; for them this
// checks that the client is routing at all.
func WaitRouting(ctx context.Context, c echov1.EchoServiceClient, single bool) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	seen, run := map[string]bool{}, 0
	for {
		resp, err := c.Echo(ctx, &echov1.EchoRequest{Name: PayloadName})
		if err != nil {
			return fmt.Errorf("waiting for the variant's routing: %w", err)
		}
		msg := resp.GetMessage()
		v := msg[strings.LastIndex(msg, "Version ")+len("Version "):]
		seen[v] = true
		switch {
		case single && strings.HasPrefix(v, "0.9"):
			run++
		case single:
			run = 0
		}
		if (single && run >= 50) || (!single && len(seen) >= 2) {
			return nil
		}
	}
}
