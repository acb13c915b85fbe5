// Package server serves gmesh's xDS resources over ADS with
// go-control-plane, and tracks, per connected client, which version of each
// resource type it has ACKed and what it last NACKed, so a caller can wait
// until every client runs a given store revision instead of sleeping.
//
// # Cache choice
//
// One go-control-plane SnapshotCache with ads=false, and a node hash that
// maps every node to one key (or, with views, to its view's key: see
// Views): all clients of a view see the same configuration, a new client
// gets the current snapshot on its first request, and Publish costs one
// SetSnapshot per view however many clients are connected. ads=true is avoided because
// it holds back responses whose request does not name every resource in the
// snapshot, and grpc-go asks for clusters one at a time (an extra round trip
// and warnings at start-up). The snapshot carries a version per type, so a
// weight change resends route configurations only. LinearCache (per-resource
// versions) was not needed: with per-type versions a weight change already
// sends only RDS, and the measured publish-to-last-ACK latency (BENCH.md in
// internal/xds) meets the goal with the simpler cache.
//
// SetSnapshot never blocks on a client: the ADS stream's response channel has
// room for one response per type and the cache holds at most one open watch
// per type per stream, so a slow or stuck client cannot hold up Publish.
//
// # Versions
//
// A version is "<epoch>-<n>": epoch is the server's boot time (base 36 Unix
// nanoseconds, or Options.Epoch), n a decimal counter that increases by one on
// every Publish. A type whose content did not change keeps its version, so
// its clients are not resent. Versions from another epoch (a client that
// reconnects after a control-plane restart) count as nothing ACKed.
//
// # Views
//
// With Options.View, clients do not all share one snapshot: View(nodeID)
// names the client's view, and each view has its own snapshot cache key.
// The view of a mesh (its name) holds that mesh's resources only; the
// PlaintextView holds the resources of the meshes without TLS
// (xds.Resources.Mesh and TLSMeshes, recorded by xds.Translate). Publish
// sets every view's snapshot with the same per-type versions: a type's
// version moves when any view's content of it changes (which view holds
// what included), so the ACK tracking is the same as with one snapshot, and
// a client whose view did not change re-ACKs its unchanged resources under
// the new version. A view first asked for after a publish gets its
// snapshot from the last published resources at once.
//
// # Authentication
//
// With Options.Auth (MeshAuth in local mode) every stream is authenticated
// at its first request, before the cache sees it, and every fetch: a
// refused stream ends with UNAUTHENTICATED or PERMISSION_DENIED, is logged
// once ("xds client refused", naming the claimed node and the
// certificate's SPIFFE ID), and never gets a node id in the tracking
// state, so it is never listed or counted. A stream let in without TLS is
// checked again at each request. TLSOrPlaintext serves TLS and plain text
// on one port.
package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/gmesh-dev/gmesh/internal/xds"
)

// snapshotKey is the one cache key every node maps to.
const snapshotKey = "gmesh"

// historyLimit bounds how many publishes Converged can look back over.
const historyLimit = 4096

// Options configure a Server. The zero value is usable.
type Options struct {
	// Epoch prefixes every version; default: the boot time.
	Epoch string
	// Now is the clock for timestamps in ClientStatus; default time.Now.
	Now func() time.Time
	// Auth, when set, authenticates every stream at its first request
	// and every fetch before anything is sent: a refused stream ends with
	// Auth's error (an *AuthError is logged naming the claimed node and
	// the certificate's ID), is never listed by Clients and never counts
	// for Converged, Behind or WaitSubscribed. nil: every client is served.
	Auth Authenticator
	// View, when set, gives each client one view of what is published
	// instead of everything (see Views in the package comment): the name
	// of a mesh (that mesh's resources only) or PlaintextView (the meshes
	// without TLS). It is asked with the node id of a request the
	// Authenticator let in, at every request, so it must agree with it: a
	// node whose stream may come in plain text must be in PlaintextView.
	// Its answer for a node id is kept until the next Publish, so a
	// change of a node's view takes effect with the publish of the change
	// that causes it. Publish then refuses resources whose mesh is not
	// recorded. nil: every client gets every resource.
	View func(nodeID string) string
}

// PlaintextView is the view of the clients of no mesh with TLS on: the
// resources of the meshes without TLS. No mesh can have this name.
const PlaintextView = "/plaintext"

// Server is gmesh's ADS server.
type Server struct {
	log   *slog.Logger
	now   func() time.Time
	auth  Authenticator
	view  func(nodeID string) string
	epoch string
	cache cache.SnapshotCache
	xds   xdsserver.Server
	stop  context.CancelFunc

	publishMu sync.Mutex // serialises Publish

	mu        sync.Mutex
	counter   uint64
	rev       uint64
	published bool
	versions  map[string]string // type URL -> current version
	counters  map[string]uint64 // type URL -> counter of the current version
	// hashes: type URL -> view -> hash of the view's resources of the type.
	hashes map[string]map[string][sha256.Size]byte
	// views holds every view with a snapshot (or asked for before the
	// first publish); a view stays once set (emptied when its mesh goes).
	views map[string]bool
	last  *xds.Resources // the last published resources
	// nodeViews caches View per node id until the next Publish (the cache
	// asks for a node's view at every request); viewGen counts the
	// clearings, so that an answer computed before one is not kept.
	nodeViews map[string]string
	viewGen   uint64
	history   []publish // oldest first, at most historyLimit
	streams   map[int64]*stream
	deltas    map[int64]*deltaStream // delta streams, tracked only to authenticate them
	changed   chan struct{}          // closed and replaced on every tracked change
}

// publish records the per-type version counters of one Publish.
type publish struct {
	rev      uint64
	counters map[string]uint64
}

// nodeHash maps every node to its view's snapshot, or to the one shared
// snapshot without views.
type nodeHash struct{ s *Server }

func (h nodeHash) ID(n *corepb.Node) string { return h.s.viewOf(n.GetId()) }

// viewOf is the snapshot key of nodeID: its view (Options.View, asked once
// per node id between publishes), or the one shared key without views.
func (s *Server) viewOf(nodeID string) string {
	if s.view == nil {
		return snapshotKey
	}
	s.mu.Lock()
	key, ok := s.nodeViews[nodeID]
	gen := s.viewGen
	s.mu.Unlock()
	if ok {
		return key
	}
	key = s.view(nodeID)
	s.mu.Lock()
	if s.viewGen == gen {
		if s.nodeViews == nil {
			s.nodeViews = map[string]string{}
		}
		s.nodeViews[nodeID] = key
	}
	s.mu.Unlock()
	return key
}

// New returns a Server with nothing published: clients that connect before
// the first Publish wait for it.
func New(logger *slog.Logger, opts Options) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Epoch == "" {
		opts.Epoch = strconv.FormatInt(time.Now().UnixNano(), 36)
	}
	s := &Server{
		log:      logger,
		now:      opts.Now,
		auth:     opts.Auth,
		view:     opts.View,
		epoch:    opts.Epoch,
		versions: map[string]string{},
		counters: map[string]uint64{},
		hashes:   map[string]map[string][sha256.Size]byte{},
		views:    map[string]bool{},
		streams:  map[int64]*stream{},
		deltas:   map[int64]*deltaStream{},
		changed:  make(chan struct{}),
	}
	gl := slogLogger{l: logger}
	s.cache = cache.NewSnapshotCache(false, nodeHash{s: s}, gl)
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.xds = xdsserver.NewServer(ctx, s.cache, (*callbacks)(s), sotw.WithLogger(gl))
	return s
}

// Register adds ADS, and the per-type discovery services Envoy can use
// instead, to g.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
	endpointservice.RegisterEndpointDiscoveryServiceServer(g, s.xds)
}

// Close ends the server's open streams' processing. Stop the grpc.Server too.
func (s *Server) Close() { s.stop() }

// Publish installs res, built from store revision rev, as the snapshot every
// client gets (with Options.View, each view's part of it). It validates res
// first and changes nothing if it is invalid. rev may repeat the last
// published revision (endpoint health changes do not move the store), but
// not go back.
func (s *Server) Publish(res *xds.Resources, rev uint64) error {
	if res == nil {
		return errors.New("publish: nil resources")
	}
	if err := res.Validate(); err != nil {
		return fmt.Errorf("publish revision %d: %w", rev, err)
	}
	if s.view != nil {
		if u := res.Unrecorded(); len(u) > 0 {
			return fmt.Errorf("publish revision %d: views need every resource's mesh (xds.Translate records them), not recorded for %s", rev, strings.Join(u, ", "))
		}
	}

	s.publishMu.Lock()
	defer s.publishMu.Unlock()

	s.mu.Lock()
	keys := s.viewKeysLocked(res)
	s.mu.Unlock()
	views := make(map[string]*viewContent, len(keys))
	for _, key := range keys {
		vc, err := newViewContent(s.viewResources(res, key))
		if err != nil {
			return fmt.Errorf("publish revision %d: %w", rev, err)
		}
		views[key] = vc
	}

	s.mu.Lock()
	if s.published && rev < s.rev {
		last := s.rev
		s.mu.Unlock()
		return fmt.Errorf("publish revision %d: older than the published revision %d", rev, last)
	}
	s.counter++
	p := publish{rev: rev, counters: make(map[string]uint64, len(xds.TypeURLs))}
	var changed []string
	for _, typeURL := range xds.TypeURLs {
		hashes := make(map[string][sha256.Size]byte, len(views))
		for key, vc := range views {
			hashes[key] = vc.hashes[typeURL]
		}
		if !s.published || !maps.Equal(hashes, s.hashes[typeURL]) {
			s.counters[typeURL] = s.counter
			s.versions[typeURL] = s.version(s.counter)
			changed = append(changed, typeURL)
		}
		s.hashes[typeURL] = hashes
		p.counters[typeURL] = s.counters[typeURL]
	}
	snaps := make(map[string]*cache.Snapshot, len(views))
	for key, vc := range views {
		snaps[key] = vc.snapshot(s.versions)
		s.views[key] = true
	}
	s.published = true
	s.rev = rev
	s.last = res
	s.nodeViews = nil
	s.viewGen++
	s.history = append(s.history, p)
	if len(s.history) > historyLimit {
		s.history = append(s.history[:0:0], s.history[len(s.history)-historyLimit:]...)
	}
	s.notifyLocked()
	s.mu.Unlock()

	// SetSnapshot only fails when its context ends; it never waits on a
	// client (see the package comment).
	for _, key := range keys {
		if err := s.cache.SetSnapshot(context.Background(), key, snaps[key]); err != nil {
			return fmt.Errorf("publish revision %d: %w", rev, err)
		}
	}
	s.log.Debug("xds snapshot published", "revision", rev, "changed", changed, "counter", p.counters, "views", len(keys))
	return nil
}

// viewKeysLocked lists the snapshot keys a publish of res sets, sorted:
// the one shared key without views; with views, every view set before (or
// asked for), the PlaintextView and each mesh of res with TLS on. Call
// with s.mu held.
func (s *Server) viewKeysLocked(res *xds.Resources) []string {
	if s.view == nil {
		return []string{snapshotKey}
	}
	set := map[string]bool{PlaintextView: true}
	for key := range s.views {
		set[key] = true
	}
	for m := range res.TLSMeshes {
		set[m] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// viewResources is the part of res that the view key gets.
func (s *Server) viewResources(res *xds.Resources, key string) *xds.Resources {
	switch {
	case s.view == nil:
		return res
	case key == PlaintextView:
		return res.Subset(func(m string) bool { return !res.TLSMeshes[m] })
	default:
		return res.Subset(func(m string) bool { return m == key })
	}
}

// viewContent is one view's resources by type and their hashes.
type viewContent struct {
	byType map[string][]types.Resource
	hashes map[string][sha256.Size]byte
}

func newViewContent(res *xds.Resources) (*viewContent, error) {
	vc := &viewContent{byType: res.ByType(), hashes: make(map[string][sha256.Size]byte, len(xds.TypeURLs))}
	for _, typeURL := range xds.TypeURLs {
		h, err := hashResources(vc.byType[typeURL])
		if err != nil {
			return nil, err
		}
		vc.hashes[typeURL] = h
	}
	return vc, nil
}

// snapshot is the view's snapshot under the per-type versions.
func (vc *viewContent) snapshot(versions map[string]string) *cache.Snapshot {
	snap := &cache.Snapshot{}
	for _, typeURL := range xds.TypeURLs {
		snap.Resources[cache.GetResponseType(typeURL)] = cache.NewResources(versions[typeURL], vc.byType[typeURL])
	}
	return snap
}

// ensureView makes sure the view of nodeID has a snapshot: a view first
// asked for after a publish gets the last published resources' part at
// once, under the current versions (its clients have nothing yet); one
// asked for before the first publish is set by that publish. Without
// views it does nothing.
func (s *Server) ensureView(nodeID string) error {
	if s.view == nil {
		return nil
	}
	key := s.viewOf(nodeID)
	s.mu.Lock()
	done := s.views[key]
	s.mu.Unlock()
	if done {
		return nil
	}
	// Under publishMu: a Publish either ran before (then the view is
	// missing from s.last's snapshots) or will list the view.
	s.publishMu.Lock()
	defer s.publishMu.Unlock()
	s.mu.Lock()
	if s.views[key] || !s.published {
		s.views[key] = true
		s.mu.Unlock()
		return nil
	}
	res := s.last
	s.mu.Unlock()
	vc, err := newViewContent(s.viewResources(res, key))
	if err != nil {
		return fmt.Errorf("xds view %q: %w", key, err)
	}
	s.mu.Lock()
	for _, typeURL := range xds.TypeURLs {
		s.hashes[typeURL][key] = vc.hashes[typeURL]
	}
	s.views[key] = true
	snap := vc.snapshot(s.versions)
	s.mu.Unlock()
	if err := s.cache.SetSnapshot(context.Background(), key, snap); err != nil {
		return fmt.Errorf("xds view %q: %w", key, err)
	}
	s.log.Debug("xds view added", "view", key)
	return nil
}

// Published returns the last published revision and the current version of
// each type.
func (s *Server) Published() (rev uint64, versions map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	versions = make(map[string]string, len(s.versions))
	for k, v := range s.versions {
		versions[k] = v
	}
	return s.rev, versions
}

func (s *Server) version(n uint64) string { return s.epoch + "-" + strconv.FormatUint(n, 10) }

// counterOf parses a version of this server's epoch; 0 for anything else.
func (s *Server) counterOf(version string) uint64 {
	rest, ok := strings.CutPrefix(version, s.epoch+"-")
	if !ok {
		return 0
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// hashResources hashes a type's content deterministically. Resources arrive
// sorted by name from xds.Translate.
func hashResources(rs []types.Resource) ([sha256.Size]byte, error) {
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	for _, r := range rs {
		b, err := opts.Marshal(r)
		if err != nil {
			return [sha256.Size]byte{}, fmt.Errorf("hash %T: %w", r, err)
		}
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out, nil
}

// notifyLocked wakes every WaitConverged. Call with s.mu held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}
