//go:build !race

package bench

import (
	"context"
	"testing"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
)

// Allocation budgets on the two hottest paths. testing.AllocsPerRun counts
// the whole process's heap allocations per call (client, server, and the
// control plane idling beside them), so the budgets hold the full path's
// cost, measured at about 187 and 383 on grpc-go v1.85.0 with headroom of
// about 10%. Not under -race, which drops sync.Pool items at random.

const (
	budgetMeshCall    = 210 // one Echo call through xds:///, client and server
	budgetGatewayCall = 430 // GET through gateway -> echo-client -> mesh -> echo-server
)

func TestAllocBudgetMeshCall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the mesh")
	}
	e := getEnv(t)
	call := EchoCall(echov1.NewEchoServiceClient(e.xds))
	ctx := context.Background()
	var err error
	got := testing.AllocsPerRun(500, func() {
		if cerr := call(ctx, 0); cerr != nil {
			err = cerr
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.0f allocations per call through the mesh", got)
	if got > budgetMeshCall {
		t.Errorf("an Echo call through the mesh allocates %.0f times, budget %d", got, budgetMeshCall)
	}
}

func TestAllocBudgetGatewayCall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the mesh")
	}
	e := getEnv(t)
	hc := NewHTTPClient(1)
	defer hc.CloseIdleConnections()
	call := HTTPCall(hc, e.httpStk.URL("gateway"))
	ctx := context.Background()
	var err error
	got := testing.AllocsPerRun(300, func() {
		if cerr := call(ctx, 0); cerr != nil {
			err = cerr
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%.0f allocations per request through the gateway", got)
	if got > budgetGatewayCall {
		t.Errorf("a request through the gateway allocates %.0f times, budget %d", got, budgetGatewayCall)
	}
}
