package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	meshv1 "github.com/gmesh-dev/gmesh/api/mesh/v1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/registry"
	"github.com/gmesh-dev/gmesh/internal/store"
)

// Limits of the admin API.
const (
	maxApplyResources = 1000
	maxWaitACK        = 5 * time.Minute
)

// admin implements meshv1.MeshAdminServer over the control plane's parts.
type admin struct {
	meshv1.UnimplementedMeshAdminServer
	cp *ControlPlane
}

var _ meshv1.MeshAdminServer = (*admin)(nil)

func (a *admin) Apply(ctx context.Context, req *meshv1.ApplyRequest) (*meshv1.ApplyResponse, error) {
	if len(req.Resources) > maxApplyResources {
		return nil, status.Errorf(codes.InvalidArgument, "%d resources in one apply; at most %d", len(req.Resources), maxApplyResources)
	}
	var puts []*mesh.Resource
	var errs mesh.Errors
	for i, r := range req.Resources {
		file, doc := req.Source, i+1
		if r.File != "" {
			file, doc = r.File, int(r.Doc)
		}
		res, err := decodeResource(r.Json)
		if err != nil {
			var e *mesh.Error
			if errors.As(err, &e) {
				e.File, e.Doc = file, doc
				errs = append(errs, e)
			} else {
				errs = append(errs, &mesh.Error{Code: mesh.EInvalid, File: file, Doc: doc, Message: err.Error()})
			}
			continue
		}
		if res.Kind == mesh.KindRollout {
			errs = append(errs, &mesh.Error{Code: mesh.EInvalid, File: file, Doc: doc, Field: "kind", Message: "rollouts are started with `gmesh deploy`, not applied"})
			continue
		}
		res.Status = nil
		// Locate the document for errors the store finds (a field's value,
		// a reference to a missing resource): Source does not travel in
		// the JSON.
		res.Source = &mesh.Source{File: file, Doc: doc}
		puts = append(puts, res)
	}
	if len(errs) > 0 {
		return nil, toStatus(errs)
	}
	if req.DryRun {
		if err := a.cp.dryRun(ctx, puts); err != nil {
			return nil, toStatus(err)
		}
		return &meshv1.ApplyResponse{}, nil
	}
	res, err := a.cp.store.Commit(ctx, puts, nil)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &meshv1.ApplyResponse{Revision: res.Revision}
	for _, r := range res.Results {
		b, err := json.Marshal(r.Resource)
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Resources = append(resp.Resources, &meshv1.Resource{Json: b})
		resp.Results = append(resp.Results, r.Result)
	}
	return resp, nil
}

func (a *admin) ref(kind, meshName, name string) (mesh.Ref, error) {
	k, err := mesh.ParseKind(kind)
	if err != nil {
		return mesh.Ref{}, err
	}
	if name == "" {
		return mesh.Ref{}, mesh.FieldError("name", "a name is required")
	}
	return mesh.Ref{Kind: k, Mesh: meshName, Name: name}, nil
}

func (a *admin) Get(ctx context.Context, req *meshv1.GetRequest) (*meshv1.Resource, error) {
	ref, err := a.ref(req.Kind, req.Mesh, req.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	if ref.Kind != mesh.KindMesh && ref.Mesh == "" {
		ref.Mesh, err = a.cp.onlyMesh(ctx, ref)
		if err != nil {
			return nil, toStatus(err)
		}
	}
	r, err := a.cp.store.Get(ctx, ref)
	if err != nil {
		return nil, toStatus(err)
	}
	return encode(r)
}

func (a *admin) List(ctx context.Context, req *meshv1.ListRequest) (*meshv1.ListResponse, error) {
	k, err := mesh.ParseKind(req.Kind)
	if err != nil {
		return nil, toStatus(err)
	}
	rs, err := a.cp.store.List(ctx, k, req.Mesh)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &meshv1.ListResponse{}
	for _, r := range rs {
		m, err := encode(r)
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Resources = append(resp.Resources, m)
	}
	return resp, nil
}

func (a *admin) Delete(ctx context.Context, req *meshv1.DeleteRequest) (*meshv1.DeleteResponse, error) {
	ref, err := a.ref(req.Kind, req.Mesh, req.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	if ref.Kind != mesh.KindMesh && ref.Mesh == "" {
		ref.Mesh, err = a.cp.onlyMesh(ctx, ref)
		if err != nil {
			return nil, toStatus(err)
		}
	}
	if ref.Kind == mesh.KindRollout {
		return nil, toStatus(mesh.FieldError("kind", "rollouts are ended with `gmesh rollout abort`, not deleted"))
	}
	if _, err := a.cp.store.Get(ctx, ref); err != nil {
		return nil, toStatus(err)
	}
	if _, err := a.cp.store.CommitVersioned(ctx, nil, []store.Deletion{{Ref: ref, ResourceVersion: req.ResourceVersion}}); err != nil {
		return nil, toStatus(err)
	}
	return &meshv1.DeleteResponse{}, nil
}

func (a *admin) Watch(req *meshv1.WatchRequest, ss meshv1.MeshAdmin_WatchServer) error {
	var kind mesh.Kind
	if req.Kind != "" {
		k, err := mesh.ParseKind(req.Kind)
		if err != nil {
			return toStatus(err)
		}
		kind = k
	}
	ctx := ss.Context()
	events := a.cp.store.Watch(ctx)
	// Start with the current state as PUT events, then follow changes.
	st, err := a.cp.store.State(ctx)
	if err != nil {
		return toStatus(err)
	}
	send := func(rev uint64, typ string, r *mesh.Resource) error {
		ev := &meshv1.WatchEvent{Revision: rev, Type: typ}
		if r != nil {
			m, err := encode(r)
			if err != nil {
				return err
			}
			ev.Resource = m
		}
		return ss.Send(ev)
	}
	sendState := func(st *mesh.State) error {
		for _, k := range mesh.Kinds {
			if kind != "" && k != kind {
				continue
			}
			for _, r := range st.List(k, "") {
				if err := send(st.Revision, "PUT", r); err != nil {
					return err
				}
			}
		}
		return send(st.Revision, "SYNCED", nil)
	}
	if err := sendState(st); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			switch ev.Type {
			case "RESYNC":
				st, err := a.cp.store.State(ctx)
				if err != nil {
					return toStatus(err)
				}
				if err := send(st.Revision, "RESYNC", nil); err != nil {
					return err
				}
				if err := sendState(st); err != nil {
					return err
				}
			case "PUT", "DELETE":
				r := ev.Resource
				if r == nil {
					r = &mesh.Resource{Kind: ev.Ref.Kind, Metadata: mesh.Metadata{Name: ev.Ref.Name, Mesh: ev.Ref.Mesh}}
				}
				if kind != "" && r.Kind != kind {
					continue
				}
				if err := send(ev.Revision, ev.Type, r); err != nil {
					return err
				}
			}
		}
	}
}

func (a *admin) Status(ctx context.Context, _ *meshv1.StatusRequest) (*meshv1.StatusResponse, error) {
	st, err := a.cp.Status(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, toStatus(err)
	}
	return &meshv1.StatusResponse{Json: b}, nil
}

func (a *admin) WaitACK(ctx context.Context, req *meshv1.WaitACKRequest) (*meshv1.WaitACKResponse, error) {
	var rev uint64
	if _, err := fmt.Sscan(req.Version, &rev); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "version %q: want a store revision", req.Version)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxWaitACK)
		defer cancel()
	}
	typeURL := req.TypeUrl
	if typeURL == "" {
		typeURL = routeTypeURL
	}
	if err := a.cp.xds.WaitConverged(ctx, typeURL, rev); err != nil {
		return nil, toStatus(err)
	}
	return &meshv1.WaitACKResponse{Clients: int32(len(a.cp.xds.Clients()))}, nil
}

func (a *admin) RegisterEndpoint(ctx context.Context, req *meshv1.RegisterEndpointRequest) (*meshv1.RegisterEndpointResponse, error) {
	var ep mesh.Endpoint
	if err := json.Unmarshal(req.EndpointJson, &ep); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "endpoint: %v", err)
	}
	if err := a.cp.registry.Register(ctx, &ep); err != nil {
		return nil, toStatus(err)
	}
	return &meshv1.RegisterEndpointResponse{}, nil
}

func (a *admin) DeregisterEndpoint(ctx context.Context, req *meshv1.DeregisterEndpointRequest) (*meshv1.DeregisterEndpointResponse, error) {
	if err := a.cp.registry.Deregister(ctx, req.Id); err != nil {
		return nil, toStatus(err)
	}
	return &meshv1.DeregisterEndpointResponse{}, nil
}

func (a *admin) endpointsJSON(req *meshv1.ListEndpointsRequest) ([]byte, error) {
	eps := a.cp.registry.List(registry.Filter{Mesh: req.Mesh, Service: req.Service})
	if eps == nil {
		eps = []*mesh.Endpoint{}
	}
	return json.Marshal(eps)
}

func (a *admin) ListEndpoints(_ context.Context, req *meshv1.ListEndpointsRequest) (*meshv1.ListEndpointsResponse, error) {
	b, err := a.endpointsJSON(req)
	if err != nil {
		return nil, toStatus(err)
	}
	return &meshv1.ListEndpointsResponse{EndpointsJson: b}, nil
}

func (a *admin) WatchEndpoints(req *meshv1.ListEndpointsRequest, ss meshv1.MeshAdmin_WatchEndpointsServer) error {
	notify, cancel := a.cp.registry.Subscribe()
	defer cancel()
	var last []byte
	for {
		b, err := a.endpointsJSON(req)
		if err != nil {
			return toStatus(err)
		}
		if string(b) != string(last) {
			if err := ss.Send(&meshv1.ListEndpointsResponse{EndpointsJson: b}); err != nil {
				return err
			}
			last = b
		}
		select {
		case <-ss.Context().Done():
			return nil
		case <-notify:
		}
	}
}

func (a *admin) StartRollout(ctx context.Context, req *meshv1.StartRolloutRequest) (*meshv1.Resource, error) {
	r, err := decodeResource(req.RolloutJson)
	if err != nil {
		return nil, toStatus(err)
	}
	if r.Kind != mesh.KindRollout {
		return nil, toStatus(mesh.FieldError("kind", "want Rollout, got %q", r.Kind))
	}
	out, err := a.cp.rollouts.Start(ctx, r)
	if err != nil {
		return nil, toStatus(err)
	}
	a.cp.kickRollouts()
	return encode(out)
}

func (a *admin) ControlRollout(ctx context.Context, req *meshv1.ControlRolloutRequest) (*meshv1.Resource, error) {
	ref := mesh.Ref{Kind: mesh.KindRollout, Mesh: req.Mesh, Name: req.Service}
	var err error
	if ref.Mesh == "" {
		if ref.Mesh, err = a.cp.onlyMesh(ctx, ref); err != nil {
			return nil, toStatus(err)
		}
	}
	if err := a.cp.rollouts.Control(ctx, ref, req.Action); err != nil {
		return nil, toStatus(err)
	}
	a.cp.kickRollouts()
	r, err := a.cp.store.Get(ctx, ref)
	if err != nil {
		return nil, toStatus(err)
	}
	return encode(r)
}

func encode(r *mesh.Resource) (*meshv1.Resource, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", r.Ref(), err)
	}
	return &meshv1.Resource{Json: b}, nil
}

// decodeResource decodes one resource's JSON strictly, with its kind's spec
// type.
func decodeResource(b []byte) (*mesh.Resource, error) {
	var r mesh.Resource
	if err := json.Unmarshal(b, &r); err != nil {
		var e *mesh.Error
		if errors.As(err, &e) {
			return nil, err
		}
		return nil, mesh.Errorf(mesh.EInvalid, "%v", err)
	}
	return &r, nil
}

// dryRun validates puts against the current state without storing them.
func (cp *ControlPlane) dryRun(ctx context.Context, puts []*mesh.Resource) error {
	if err := mesh.CheckDuplicates(puts); err != nil {
		return err
	}
	clones := make([]*mesh.Resource, len(puts))
	for i, r := range puts {
		clones[i] = r.Clone()
	}
	if err := mesh.DefaultAndValidate(clones...); err != nil {
		return err
	}
	st, err := cp.store.State(ctx)
	if err != nil {
		return err
	}
	next := st.Clone()
	for _, r := range clones {
		next.Put(r)
	}
	return mesh.ValidateState(next)
}
