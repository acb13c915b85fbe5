// Package server serves gmesh's xDS resources over ADS with
// go-control-plane, and tracks, per connected client, which version of each
// resource type it has ACKed and what it last NACKed, so a caller can wait
// until every client runs a given store revision instead of sleeping.
//
// # Cache choice
//
// One go-control-plane SnapshotCache with ads=false, and a node hash that
// maps every node to one key: all clients see the same mesh, a new client gets
// the current snapshot on its first request, and Publish costs one
// SetSnapshot however many clients are connected. ads=true is avoided because
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
}

// Server is gmesh's ADS server.
type Server struct {
	log   *slog.Logger
	now   func() time.Time
	auth  Authenticator
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
	hashes    map[string][sha256.Size]byte
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

// nodeHash maps every node to the one shared snapshot.
type nodeHash struct{}

func (nodeHash) ID(*corepb.Node) string { return snapshotKey }

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
		epoch:    opts.Epoch,
		versions: map[string]string{},
		counters: map[string]uint64{},
		hashes:   map[string][sha256.Size]byte{},
		streams:  map[int64]*stream{},
		deltas:   map[int64]*deltaStream{},
		changed:  make(chan struct{}),
	}
	gl := slogLogger{l: logger}
	s.cache = cache.NewSnapshotCache(false, nodeHash{}, gl)
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
// client gets. It validates res first and changes nothing if it is invalid.
// rev may repeat the last published revision (endpoint health changes do not
// move the store), but not go back.
func (s *Server) Publish(res *xds.Resources, rev uint64) error {
	if res == nil {
		return errors.New("publish: nil resources")
	}
	if err := res.Validate(); err != nil {
		return fmt.Errorf("publish revision %d: %w", rev, err)
	}
	byType := res.ByType()
	hashes := make(map[string][sha256.Size]byte, len(xds.TypeURLs))
	for _, typeURL := range xds.TypeURLs {
		h, err := hashResources(byType[typeURL])
		if err != nil {
			return fmt.Errorf("publish revision %d: %w", rev, err)
		}
		hashes[typeURL] = h
	}

	s.publishMu.Lock()
	defer s.publishMu.Unlock()

	s.mu.Lock()
	if s.published && rev < s.rev {
		last := s.rev
		s.mu.Unlock()
		return fmt.Errorf("publish revision %d: older than the published revision %d", rev, last)
	}
	s.counter++
	snap := &cache.Snapshot{}
	p := publish{rev: rev, counters: make(map[string]uint64, len(xds.TypeURLs))}
	var changed []string
	for _, typeURL := range xds.TypeURLs {
		if !s.published || hashes[typeURL] != s.hashes[typeURL] {
			s.counters[typeURL] = s.counter
			s.versions[typeURL] = s.version(s.counter)
			s.hashes[typeURL] = hashes[typeURL]
			changed = append(changed, typeURL)
		}
		p.counters[typeURL] = s.counters[typeURL]
		snap.Resources[cache.GetResponseType(typeURL)] = cache.NewResources(s.versions[typeURL], byType[typeURL])
	}
	s.published = true
	s.rev = rev
	s.history = append(s.history, p)
	if len(s.history) > historyLimit {
		s.history = append(s.history[:0:0], s.history[len(s.history)-historyLimit:]...)
	}
	s.notifyLocked()
	s.mu.Unlock()

	// SetSnapshot only fails when its context ends; it never waits on a
	// client (see the package comment).
	if err := s.cache.SetSnapshot(context.Background(), snapshotKey, snap); err != nil {
		return fmt.Errorf("publish revision %d: %w", rev, err)
	}
	s.log.Debug("xds snapshot published", "revision", rev, "changed", changed, "counter", p.counters)
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
