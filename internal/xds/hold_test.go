package xds_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/gmesh-dev/gmesh/internal/xds"
)

// A held target keeps its pin route but gets no weight; a hold that would
// leave a route with no weight at all is ignored for that route.
func TestHold(t *testing.T) {
	held, err := xds.Translate(xds.Input{Resources: echoTopology(50, 50), Endpoints: echoEndpoints(), Hold: map[string]bool{"echo/echo-server-1-0": true}})
	if err != nil {
		t.Fatalf("Translate with a hold: %v", err)
	}
	only09, err := xds.Translate(xds.Input{Resources: echoTopology(100, 0), Endpoints: echoEndpoints()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(only09.Routes, held.Routes, protocmp.Transform()); diff != "" {
		t.Errorf("50/50 with 1.0 held should route as 100/0 (pins included); diff (-100/0 +held):\n%s", diff)
	}
	if got := held.RoutedClusters(); !got["echo/echo-server-1-0"] || !got["echo/echo-server-0-9"] {
		t.Errorf("RoutedClusters = %v, want both versions (the held one through its pin)", got)
	}

	all, err := xds.Translate(xds.Input{Resources: echoTopology(50, 50), Endpoints: echoEndpoints(), Hold: map[string]bool{"echo/echo-server-1-0": true, "echo/echo-server-0-9": true}})
	if err != nil {
		t.Fatalf("Translate holding every target: %v", err)
	}
	plain, err := xds.Translate(xds.Input{Resources: echoTopology(50, 50), Endpoints: echoEndpoints()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(plain.Routes, all.Routes, protocmp.Transform()); diff != "" {
		t.Errorf("a hold of every target should be ignored; diff (-plain +held):\n%s", diff)
	}
	if got := xds.WeightedTargets(xds.Input{Resources: echoTopology(100, 0)}); len(got) != 1 || !got["echo/echo-server-0-9"] {
		t.Errorf("WeightedTargets(100/0) = %v, want only echo/echo-server-0-9", got)
	}
}
