package controlplane

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	meshv1 "github.com/gmesh-dev/gmesh/api/mesh/v1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/runtime"
)

// Client is a typed client of the admin API, used by the CLI, `gmesh up`'s
// agent and tests. Its errors are domain errors (mesh.ErrorCode works).
type Client struct {
	conn *grpc.ClientConn
	api  meshv1.MeshAdminClient
	addr string
}

// Dial connects to the admin API at addr (no I/O until the first call).
func Dial(addr, token string) (*Client, error) {
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(bearer(token)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
	)
	if err != nil {
		return nil, fmt.Errorf("control plane %s: %w", addr, err)
	}
	return &Client{conn: conn, api: meshv1.NewMeshAdminClient(conn), addr: addr}, nil
}

// Addr is the address the client talks to.
func (c *Client) Addr() string { return c.addr }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// API is the raw generated client, for streams.
func (c *Client) API() meshv1.MeshAdminClient { return c.api }

func (c *Client) wrap(err error) error {
	if err == nil {
		return nil
	}
	err = FromStatus(err)
	if mesh.ErrorCode(err) == mesh.EUnavailable {
		return &mesh.Error{Code: mesh.EUnavailable, Message: fmt.Sprintf("control plane at %s is not reachable (is `gmesh up` or `gmesh controlplane` running?): %v", c.addr, err), Err: err}
	}
	return err
}

// Apply stores resources all or nothing.
func (c *Client) Apply(ctx context.Context, source string, rs []*mesh.Resource, dryRun bool) (*meshv1.ApplyResponse, []*mesh.Resource, error) {
	req := &meshv1.ApplyRequest{Source: source, DryRun: dryRun}
	for _, r := range rs {
		b, err := json.Marshal(r)
		if err != nil {
			return nil, nil, fmt.Errorf("encode %s: %w", r.Ref(), err)
		}
		m := &meshv1.Resource{Json: b}
		if r.Source != nil {
			m.File, m.Doc = r.Source.File, int32(r.Source.Doc)
		}
		req.Resources = append(req.Resources, m)
	}
	resp, err := c.api.Apply(ctx, req)
	if err != nil {
		return nil, nil, c.wrap(err)
	}
	out, err := decodeAll(resp.Resources)
	return resp, out, err
}

// Get returns one resource.
func (c *Client) Get(ctx context.Context, ref mesh.Ref) (*mesh.Resource, error) {
	resp, err := c.api.Get(ctx, &meshv1.GetRequest{Kind: string(ref.Kind), Mesh: ref.Mesh, Name: ref.Name})
	if err != nil {
		return nil, c.wrap(err)
	}
	return decodeOne(resp)
}

// List returns the resources of a kind ("" mesh = all meshes).
func (c *Client) List(ctx context.Context, kind mesh.Kind, meshName string) ([]*mesh.Resource, error) {
	resp, err := c.api.List(ctx, &meshv1.ListRequest{Kind: string(kind), Mesh: meshName})
	if err != nil {
		return nil, c.wrap(err)
	}
	return decodeAll(resp.Resources)
}

// Delete removes a resource.
func (c *Client) Delete(ctx context.Context, ref mesh.Ref, resourceVersion string) error {
	_, err := c.api.Delete(ctx, &meshv1.DeleteRequest{Kind: string(ref.Kind), Mesh: ref.Mesh, Name: ref.Name, ResourceVersion: resourceVersion})
	return c.wrap(err)
}

// Status returns the control plane's status document.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	resp, err := c.api.Status(ctx, &meshv1.StatusRequest{})
	if err != nil {
		return nil, c.wrap(err)
	}
	var st Status
	if err := json.Unmarshal(resp.Json, &st); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	return &st, nil
}

var _ runtime.Registrar = (*Client)(nil)

// Register implements runtime.Registrar.
func (c *Client) Register(ctx context.Context, ep *mesh.Endpoint) error {
	b, err := json.Marshal(ep)
	if err != nil {
		return err
	}
	_, err = c.api.RegisterEndpoint(ctx, &meshv1.RegisterEndpointRequest{EndpointJson: b})
	return c.wrap(err)
}

// Deregister implements runtime.Registrar.
func (c *Client) Deregister(ctx context.Context, id string) error {
	_, err := c.api.DeregisterEndpoint(ctx, &meshv1.DeregisterEndpointRequest{Id: id})
	return c.wrap(err)
}

// Endpoints lists registered endpoints.
func (c *Client) Endpoints(ctx context.Context, meshName, service string) ([]*mesh.Endpoint, error) {
	resp, err := c.api.ListEndpoints(ctx, &meshv1.ListEndpointsRequest{Mesh: meshName, Service: service})
	if err != nil {
		return nil, c.wrap(err)
	}
	var eps []*mesh.Endpoint
	if err := json.Unmarshal(resp.EndpointsJson, &eps); err != nil {
		return nil, fmt.Errorf("decode endpoints: %w", err)
	}
	return eps, nil
}

// StartRollout starts a rollout.
func (c *Client) StartRollout(ctx context.Context, r *mesh.Resource) (*mesh.Resource, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	resp, err := c.api.StartRollout(ctx, &meshv1.StartRolloutRequest{RolloutJson: b})
	if err != nil {
		return nil, c.wrap(err)
	}
	return decodeOne(resp)
}

// ControlRollout pauses, resumes, promotes or aborts a rollout.
func (c *Client) ControlRollout(ctx context.Context, meshName, service, action string) (*mesh.Resource, error) {
	resp, err := c.api.ControlRollout(ctx, &meshv1.ControlRolloutRequest{Mesh: meshName, Service: service, Action: action})
	if err != nil {
		return nil, c.wrap(err)
	}
	return decodeOne(resp)
}

func decodeOne(r *meshv1.Resource) (*mesh.Resource, error) {
	var res mesh.Resource
	if err := json.Unmarshal(r.GetJson(), &res); err != nil {
		return nil, fmt.Errorf("decode resource: %w", err)
	}
	return &res, nil
}

func decodeAll(rs []*meshv1.Resource) ([]*mesh.Resource, error) {
	out := make([]*mesh.Resource, 0, len(rs))
	for _, r := range rs {
		res, err := decodeOne(r)
		if err != nil {
			return nil, err
		}
		out = append(out, res)
	}
	return out, nil
}
