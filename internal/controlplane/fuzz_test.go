package controlplane

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshv1 "github.com/gmesh-dev/gmesh/api/mesh/v1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/stack"
)

// fuzzCodes are the codes a hostile request may get: anything else
// (Internal, Unknown) is a bug in a handler or in the error mapping.
var fuzzCodes = map[codes.Code]bool{
	codes.InvalidArgument: true, codes.NotFound: true, codes.Aborted: true,
	codes.AlreadyExists: true, codes.FailedPrecondition: true, codes.ResourceExhausted: true,
}

func fuzzCheck(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%s: error is not a gRPC status: %v", what, err)
	}
	if !fuzzCodes[st.Code()] {
		t.Fatalf("%s: code %s: %v", what, st.Code(), err)
	}
}

// fuzzControlPlane is an in-memory control plane holding the echo stack;
// its listener is bound (New binds it) but nothing serves on it.
func fuzzControlPlane(t *testing.T, seed []*mesh.Resource) *admin {
	t.Helper()
	cp, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.ln.Close(); cp.store.Close() })
	puts := make([]*mesh.Resource, len(seed))
	for i, r := range seed {
		puts[i] = r.Clone()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cp.store.Commit(ctx, puts, nil); err != nil {
		t.Fatalf("seed the echo stack: %v", err)
	}
	return &admin{cp: cp}
}

// FuzzAdminAPI feeds arbitrary bytes to the admin API's real handlers on an
// in-memory control plane holding the echo stack: an Apply of one document,
// Get and Delete of an arbitrary kind/mesh/name, and RegisterEndpoint of
// the same bytes. No handler may panic or answer with a code other than the
// client-error codes; an applied resource can be read back.
//
//	go test ./internal/controlplane -run '^$' -fuzz FuzzAdminAPI -fuzztime 60s
func FuzzAdminAPI(f *testing.F) {
	seed, err := mesh.Decode("built-in echo stack", stack.Echo)
	if err != nil {
		f.Fatal(err)
	}
	for _, r := range seed[:3] {
		b, _ := json.Marshal(r)
		f.Add(string(r.Kind), r.Metadata.Mesh, r.Metadata.Name, b)
	}
	f.Add("VirtualNode", "echo", "echo-client", []byte(`{"apiVersion":"gmesh.dev/v1","kind":"VirtualNode","metadata":{"name":"x","mesh":"echo","resourceVersion":"999"},"spec":{}}`))
	f.Add("Rollout", "", "echo-server", []byte(`{"apiVersion":"gmesh.dev/v1","kind":"Rollout","metadata":{"name":"r","mesh":"echo"},"spec":{"steps":[1e400]}}`))
	f.Add("mesh", "", "echo", []byte(`{"id":"t1","mesh":"echo","service":"echo-server","address":"127.0.0.1","port":-1,"state":"RUNNING","health":"HEALTHY"}`))
	f.Add("Route", "nope", "", []byte(`{"id":"","port":99999999999}`))
	f.Add("vn", "echo", "echo-server-0-9", []byte(`[`))

	f.Fuzz(func(t *testing.T, kind, meshName, name string, doc []byte) {
		a := fuzzControlPlane(t, seed)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()

		resp, err := a.Apply(ctx, &meshv1.ApplyRequest{Source: "fuzz.yaml", Resources: []*meshv1.Resource{{Json: doc}}})
		fuzzCheck(t, "Apply", err)
		if err == nil {
			for _, r := range resp.Resources {
				res, derr := decodeResource(r.Json)
				if derr != nil {
					t.Fatalf("Apply returned a resource that does not decode: %v", derr)
				}
				if _, gerr := a.Get(ctx, &meshv1.GetRequest{Kind: string(res.Kind), Mesh: res.Metadata.Mesh, Name: res.Metadata.Name}); gerr != nil {
					t.Fatalf("Get of the resource Apply stored: %v", gerr)
				}
			}
		}
		_, err = a.Get(ctx, &meshv1.GetRequest{Kind: kind, Mesh: meshName, Name: name})
		fuzzCheck(t, "Get", err)
		_, err = a.Delete(ctx, &meshv1.DeleteRequest{Kind: kind, Mesh: meshName, Name: name, ResourceVersion: string(doc)})
		fuzzCheck(t, "Delete", err)
		_, err = a.RegisterEndpoint(ctx, &meshv1.RegisterEndpointRequest{EndpointJson: doc})
		fuzzCheck(t, "RegisterEndpoint", err)
		if err == nil {
			var ep mesh.Endpoint
			_ = json.Unmarshal(doc, &ep)
			_, err = a.DeregisterEndpoint(ctx, &meshv1.DeregisterEndpointRequest{Id: ep.ID})
			fuzzCheck(t, "DeregisterEndpoint", err)
		}
		_, err = a.List(ctx, &meshv1.ListRequest{Kind: kind, Mesh: meshName})
		fuzzCheck(t, "List", err)
	})
}
