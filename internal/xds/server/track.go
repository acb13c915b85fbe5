package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/gmesh-dev/gmesh/internal/xds"
)

// ErrRejected is wrapped by WaitConverged's error when a client NACKed the
// version it waits for (or a newer one): waiting longer would not help.
var ErrRejected = errors.New("client rejected the configuration")

// ClientStatus is what the server knows about one node id.
type ClientStatus struct {
	NodeID string
	// ConnectedSince is when the oldest open stream of the node opened.
	ConnectedSince time.Time
	// Streams counts the node's open ADS streams (normally 1).
	Streams int
	// Types holds, per subscribed type URL, the last ACKed version.
	Types map[string]TypeStatus
	// LastNACK is the node's most recent rejection, nil if none.
	LastNACK *NACK
}

// TypeStatus is a node's state for one resource type.
type TypeStatus struct {
	ACKedVersion string
	ACKedAt      time.Time
	// SentVersion is the last version sent to the node, at SentAt.
	SentVersion string
	SentAt      time.Time
}

// NACK is a rejected response.
type NACK struct {
	TypeURL string
	// Version is the version the client rejected.
	Version string
	// Detail is the client's error_detail message.
	Detail string
	At     time.Time
}

// stream is one ADS (or single-type xDS) stream.
type stream struct {
	id  int64
	ctx context.Context
	// authed: the stream's client was authenticated (or no Authenticator
	// is set); node stays "" until then, so an unauthenticated stream
	// counts nowhere.
	authed   bool
	plain    bool // authed without TLS: authenticated again at every request
	node     string
	opened   time.Time
	types    map[string]*typeState
	lastNACK *NACK
}

type typeState struct {
	// names is the client's current subscription (the resource names of
	// its latest request that named any).
	names       map[string]bool
	namesGen    uint64 // bumped when names change
	namesAcked  bool   // a response sent for the current names was ACKed
	subscribed  bool
	wildcard    bool
	requested   bool // a request for the type has been seen
	ackVersion  string
	ackCounter  uint64
	ackAt       time.Time
	sent        [4]sent // recent responses, for mapping a NACK's nonce
	sentNext    int
	sentAt      time.Time
	nackCounter uint64 // counter of the newest NACKed version
}

type sent struct {
	nonce, version string
	namesGen       uint64
}

func (ts *typeState) sentVersion(nonce string) string {
	for _, s := range ts.sent {
		if s.nonce == nonce && nonce != "" {
			return s.version
		}
	}
	return ""
}

func (ts *typeState) lastSent() string {
	return ts.sent[(ts.sentNext+len(ts.sent)-1)%len(ts.sent)].version
}

// callbacks implements go-control-plane's server callbacks on the Server's
// tracking state. They run on stream goroutines and only take s.mu briefly.
type callbacks Server

var _ xdsserver.Callbacks = (*callbacks)(nil)

func (c *callbacks) OnStreamOpen(ctx context.Context, id int64, _ string) error {
	s := (*Server)(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.streams[id] = &stream{id: id, ctx: ctx, authed: s.auth == nil, opened: s.now(), types: map[string]*typeState{}}
	return nil
}

// authenticate runs the Authenticator on a stream's first request, and
// again on every later request of a stream it let in without TLS (so a
// plaintext stream opened while no mesh had TLS on is ended at its next
// request once one has), outside s.mu: it may look the node up elsewhere.
// A stream's requests come one at a time, so nothing else touches authed
// and plain meanwhile.
func (s *Server) authenticate(id int64, req *discoverypb.DiscoveryRequest) error {
	s.mu.Lock()
	st, ok := s.streams[id]
	if !ok || (st.authed && !st.plain) || s.auth == nil {
		s.mu.Unlock()
		return nil
	}
	ctx := st.ctx
	nodeID := st.node
	s.mu.Unlock()
	if nodeID == "" {
		nodeID = req.GetNode().GetId()
	}
	if err := s.auth.Authenticate(ctx, nodeID); err != nil {
		s.mu.Lock()
		if st.node != "" {
			// It counted until now: it does no more.
			st.node = ""
			s.notifyLocked()
		}
		s.mu.Unlock()
		s.logRefusal(err, nodeID, id)
		return err
	}
	plain := true
	if p, ok := peer.FromContext(ctx); ok {
		_, isTLS := p.AuthInfo.(credentials.TLSInfo)
		plain = !isTLS
	}
	s.mu.Lock()
	st.authed, st.plain = true, plain
	s.mu.Unlock()
	return nil
}

// ensureStreamView makes sure the view of the stream's node has a
// snapshot before the cache sees the request (the cache keys a stream by
// the node of its first request, which later ones may leave out).
func (s *Server) ensureStreamView(id int64, req *discoverypb.DiscoveryRequest) error {
	if s.view == nil {
		return nil
	}
	s.mu.Lock()
	nodeID := ""
	if st, ok := s.streams[id]; ok {
		nodeID = st.node
	}
	s.mu.Unlock()
	if nodeID == "" {
		nodeID = req.GetNode().GetId()
	}
	if err := s.ensureView(nodeID); err != nil {
		s.log.Error("xds view not set", "node", nodeID, "stream", id, "err", err)
		return err
	}
	return nil
}

func (c *callbacks) OnStreamClosed(id int64, node *corepb.Node) {
	s := (*Server)(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.streams[id]; ok {
		delete(s.streams, id)
		s.log.Debug("xds stream closed", "stream", id, "node", st.node)
		s.notifyLocked()
	}
}

func (c *callbacks) OnStreamRequest(id int64, req *discoverypb.DiscoveryRequest) error {
	s := (*Server)(c)
	if err := s.authenticate(id, req); err != nil {
		return err
	}
	if err := s.ensureStreamView(id, req); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[id]
	if !ok {
		return nil
	}
	if st.node == "" && req.GetNode().GetId() != "" {
		st.node = req.GetNode().GetId()
		s.log.Info("xds client connected", "node", st.node, "stream", id)
	}
	typeURL := req.GetTypeUrl()
	ts := st.types[typeURL]
	if ts == nil {
		ts = &typeState{}
		st.types[typeURL] = ts
	}
	// Subscription: named resources, or a first empty request for a type
	// where empty means wildcard (Envoy's LDS/CDS). A later empty request
	// after named ones unsubscribes.
	names := len(req.GetResourceNames()) > 0
	switch {
	case names:
		ts.subscribed, ts.wildcard = true, false
		if !sameNames(ts.names, req.GetResourceNames()) {
			ts.names = make(map[string]bool, len(req.GetResourceNames()))
			for _, n := range req.GetResourceNames() {
				ts.names[n] = true
			}
			ts.namesGen++
			ts.namesAcked = false
		}
	case !ts.requested && (typeURL == xds.ListenerType || typeURL == xds.ClusterType):
		ts.subscribed, ts.wildcard = true, true
	case ts.wildcard:
	default:
		ts.subscribed = false
	}
	ts.requested = true

	if ed := req.GetErrorDetail(); ed != nil {
		v := ts.sentVersion(req.GetResponseNonce())
		if v == "" {
			v = ts.lastSent()
		}
		n := &NACK{TypeURL: typeURL, Version: v, Detail: ed.GetMessage(), At: s.now()}
		st.lastNACK = n
		if cn := s.counterOf(v); cn > ts.nackCounter {
			ts.nackCounter = cn
		}
		s.log.Warn("xds client rejected configuration", "node", st.node, "type", typeURL, "version", v, "error", ed.GetMessage())
	}
	if req.GetErrorDetail() == nil && req.GetResponseNonce() != "" {
		for _, sn := range ts.sent {
			if sn.nonce == req.GetResponseNonce() && sn.namesGen == ts.namesGen {
				ts.namesAcked = true
			}
		}
	}
	// A NACK's version_info is the last accepted version, so it counts as
	// an ACK of that one.
	if v := req.GetVersionInfo(); v != "" {
		if n := s.counterOf(v); n >= ts.ackCounter && v != ts.ackVersion {
			ts.ackVersion, ts.ackCounter, ts.ackAt = v, n, s.now()
		}
	}
	if req.GetErrorDetail() != nil {
		// The snapshot cache answers any request whose version_info
		// differs from the snapshot's at once, so a NACK (which carries
		// the old version) would be answered with the rejected version
		// again, in a hot loop. Presenting the request as if it carried
		// the rejected version makes the cache wait for the next Publish
		// instead. go-control-plane hands this same request to the cache
		// right after this callback.
		if v := ts.sentVersion(req.GetResponseNonce()); v != "" {
			req.VersionInfo = v
		}
	}
	s.notifyLocked()
	return nil
}

func (c *callbacks) OnStreamResponse(_ context.Context, id int64, req *discoverypb.DiscoveryRequest, resp *discoverypb.DiscoveryResponse) {
	s := (*Server)(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[id]
	if !ok {
		return
	}
	ts := st.types[resp.GetTypeUrl()]
	if ts == nil {
		ts = &typeState{}
		st.types[resp.GetTypeUrl()] = ts
	}
	ts.sent[ts.sentNext] = sent{nonce: resp.GetNonce(), version: resp.GetVersionInfo(), namesGen: ts.namesGen}
	ts.sentNext = (ts.sentNext + 1) % len(ts.sent)
	ts.sentAt = s.now()
}

func (c *callbacks) OnFetchRequest(ctx context.Context, req *discoverypb.DiscoveryRequest) error {
	s := (*Server)(c)
	if s.auth != nil {
		if err := s.auth.Authenticate(ctx, req.GetNode().GetId()); err != nil {
			s.logRefusal(err, req.GetNode().GetId(), 0)
			return err
		}
	}
	return s.ensureView(req.GetNode().GetId())
}
func (c *callbacks) OnFetchResponse(*discoverypb.DiscoveryRequest, *discoverypb.DiscoveryResponse) {
}

// Delta xDS streams are served by the cache but not tracked (grpc-go
// speaks state-of-the-world only); with an Authenticator they are
// authenticated at their first request like the others.
type deltaStream struct {
	ctx    context.Context
	authed bool
}

func (c *callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, _ string) error {
	s := (*Server)(c)
	if s.auth == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deltas[id] = &deltaStream{ctx: ctx}
	return nil
}

func (c *callbacks) OnDeltaStreamClosed(id int64, _ *corepb.Node) {
	s := (*Server)(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.deltas, id)
}

func (c *callbacks) OnStreamDeltaRequest(id int64, req *discoverypb.DeltaDiscoveryRequest) error {
	s := (*Server)(c)
	if s.auth == nil {
		return s.ensureView(req.GetNode().GetId())
	}
	s.mu.Lock()
	ds, ok := s.deltas[id]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	if ds.authed {
		return s.ensureView(req.GetNode().GetId())
	}
	if err := s.auth.Authenticate(ds.ctx, req.GetNode().GetId()); err != nil {
		s.logRefusal(err, req.GetNode().GetId(), id)
		return err
	}
	if err := s.ensureView(req.GetNode().GetId()); err != nil {
		return err
	}
	s.mu.Lock()
	ds.authed = true
	s.mu.Unlock()
	return nil
}
func (c *callbacks) OnStreamDeltaResponse(int64, *discoverypb.DeltaDiscoveryRequest, *discoverypb.DeltaDiscoveryResponse) {
}

// Converged reports whether the last published snapshot was built from
// revision >= rev and every connected client subscribed to typeURL has ACKed
// a version of that type at least as new as the one the first snapshot at or
// after rev carried. pending lists the clients still behind as
// "<node id>@<ACKed version>" ("<node id>@none" before any ACK), sorted.
func (s *Server) Converged(typeURL string, rev uint64) (done bool, pending []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	done, pending, _ = s.convergedLocked(typeURL, rev, true, nil)
	return done, pending
}

// ConvergedFor is Converged counting only the clients subscribed to one of
// names of typeURL (or to all of its resources): the clients a change to
// those resources concerns. A client that subscribes to other route
// configurations only, or to nothing, does not hold a rollout of a route it
// never asked for. No names: every subscribed client, as Converged.
func (s *Server) ConvergedFor(typeURL string, rev uint64, names []string) (done bool, pending []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	done, pending, _ = s.convergedLocked(typeURL, rev, true, names)
	return done, pending
}

// convergedLocked also returns the first pending client that NACKed the
// target version or a newer one. Without list it only counts (WaitConverged
// runs it on every ACK of every client).
func (s *Server) convergedLocked(typeURL string, rev uint64, list bool, names []string) (bool, []string, *NACK) {
	if !s.published || s.rev < rev {
		return false, nil, nil
	}
	target, ok := s.targetLocked(typeURL, rev)
	if !ok {
		return false, nil, nil
	}
	var pending []string
	var rejected *NACK
	behind := 0
	seen := map[string]bool{}
	for _, st := range s.streams {
		ts := st.types[typeURL]
		if st.node == "" || ts == nil || !ts.subscribed || ts.ackCounter >= target || !ts.subscribedToAny(names) {
			continue
		}
		behind++
		if ts.nackCounter >= target && rejected == nil {
			n := *st.lastNACK
			n.Detail = st.node + ": " + n.Detail
			rejected = &n
		}
		if !list || seen[st.node] {
			continue
		}
		seen[st.node] = true
		v := ts.ackVersion
		if v == "" {
			v = "none"
		}
		pending = append(pending, st.node+"@"+v)
	}
	slices.Sort(pending)
	return behind == 0, pending, rejected
}

// targetLocked is the counter of typeURL's version in the first publish at
// or after rev.
func (s *Server) targetLocked(typeURL string, rev uint64) (uint64, bool) {
	i, _ := slices.BinarySearchFunc(s.history, rev, func(p publish, rev uint64) int { return cmp.Compare(p.rev, rev) })
	if i == len(s.history) {
		return 0, false
	}
	n, ok := s.history[i].counters[typeURL]
	return n, ok
}

// WaitConverged blocks until Converged(typeURL, rev) or ctx ends. It returns
// an error wrapping ErrRejected as soon as a pending client NACKs the awaited
// version (or a newer one).
func (s *Server) WaitConverged(ctx context.Context, typeURL string, rev uint64) error {
	for {
		s.mu.Lock()
		done, _, rejected := s.convergedLocked(typeURL, rev, false, nil)
		ch := s.changed
		s.mu.Unlock()
		if done {
			return nil
		}
		if rejected != nil {
			return fmt.Errorf("wait for %s at revision %d: version %s: %s: %w", typeURL, rev, rejected.Version, rejected.Detail, ErrRejected)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			_, pending := s.Converged(typeURL, rev)
			return fmt.Errorf("wait for %s at revision %d: pending %v: %w", typeURL, rev, pending, ctx.Err())
		}
	}
}

// Clients returns the status of every connected node, sorted by node id.
// A node with several streams reports its oldest stream's ACKs.
func (s *Server) Clients() []ClientStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	byNode := map[string]*ClientStatus{}
	streams := make([]*stream, 0, len(s.streams))
	for _, st := range s.streams {
		if st.node != "" {
			streams = append(streams, st)
		}
	}
	slices.SortFunc(streams, func(a, b *stream) int { return cmp.Compare(a.id, b.id) })
	for _, st := range streams {
		cs := byNode[st.node]
		if cs == nil {
			cs = &ClientStatus{NodeID: st.node, ConnectedSince: st.opened, Types: map[string]TypeStatus{}}
			byNode[st.node] = cs
		}
		cs.Streams++
		for typeURL, ts := range st.types {
			if _, ok := cs.Types[typeURL]; ok || !ts.subscribed {
				continue
			}
			cs.Types[typeURL] = TypeStatus{ACKedVersion: ts.ackVersion, ACKedAt: ts.ackAt, SentVersion: ts.lastSent(), SentAt: ts.sentAt}
		}
		if n := st.lastNACK; n != nil && (cs.LastNACK == nil || n.At.After(cs.LastNACK.At)) {
			nc := *n
			cs.LastNACK = &nc
		}
	}
	out := make([]ClientStatus, 0, len(byNode))
	for _, cs := range byNode {
		out = append(out, *cs)
	}
	slices.SortFunc(out, func(a, b ClientStatus) int { return cmp.Compare(a.NodeID, b.NodeID) })
	return out
}

// WaitSubscribed blocks until every connected client that subscribes to
// route configurations has also subscribed to each of names of typeURL and
// ACKed the response to that subscription (for endpoints: it has put the
// clusters in its routing, fetched them, and has their endpoints), or ctx
// ends.
// grpc-go ACKs a route configuration as soon as it has parsed it; its
// request for a route's new cluster is the sign that it has applied it.
func (s *Server) WaitSubscribed(ctx context.Context, typeURL string, names []string) error {
	for {
		s.mu.Lock()
		var pending []string
		for _, st := range s.streams {
			rds := st.types[xds.RouteType]
			if st.node == "" || rds == nil || !rds.subscribed {
				continue
			}
			ts := st.types[typeURL]
			if ts == nil || (!ts.wildcard && !ts.namesAcked) {
				pending = append(pending, st.node)
				continue
			}
			for _, n := range names {
				if !ts.wildcard && !ts.names[n] {
					pending = append(pending, st.node)
					break
				}
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			slices.Sort(pending)
			return fmt.Errorf("wait for clients to subscribe to %v: pending %v: %w", names, pending, ctx.Err())
		}
	}
}

// subscribedToAny reports whether the client asked for every resource of
// the type or for one of names (no names: true).
func (ts *typeState) subscribedToAny(names []string) bool {
	if len(names) == 0 || ts.wildcard {
		return true
	}
	for _, n := range names {
		if ts.names[n] {
			return true
		}
	}
	return false
}

func sameNames(have map[string]bool, names []string) bool {
	if len(have) != len(names) {
		return false
	}
	for _, n := range names {
		if !have[n] {
			return false
		}
	}
	return true
}

// Lagging is a client that has not ACKed the version Behind asks about.
type Lagging struct {
	// Node is the client's node id.
	Node string
	// ACKed is the type's version it ACKed last, "none" before any.
	ACKed string
	// NACK is its rejection of the awaited version or a newer one, nil if
	// it has not rejected it (it has not answered yet).
	NACK *NACK
}

// Behind lists, sorted by node id, the clients subscribed to one of names
// of typeURL (or to every resource of the type; no names: every subscribed
// client) that have not ACKed the type's version as of publish rev, each
// with its NACK if it rejected that version or a newer one. The version
// awaited is the one of rev's last publish, not its first as for
// ConvergedFor: the subscribe-first step publishes a revision twice (new
// targets held at weight 0, then the weights), and a client that ACKed
// only the held routes has not got the revision's config yet. When rev was
// not published itself, the first later publish counts. ok is false while
// rev is not published yet.
func (s *Server) Behind(typeURL string, rev uint64, names []string) (ok bool, behind []Lagging) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.published || s.rev < rev {
		return false, nil
	}
	// The first publish after rev, then back to rev's last one if any.
	i, _ := slices.BinarySearchFunc(s.history, rev+1, func(p publish, rev uint64) int { return cmp.Compare(p.rev, rev) })
	if i > 0 && s.history[i-1].rev == rev {
		i--
	}
	if i == len(s.history) {
		return false, nil
	}
	target, ok := s.history[i].counters[typeURL]
	if !ok {
		return false, nil
	}
	seen := map[string]bool{}
	for _, st := range s.streams {
		ts := st.types[typeURL]
		if st.node == "" || ts == nil || !ts.subscribed || ts.ackCounter >= target || !ts.subscribedToAny(names) || seen[st.node] {
			continue
		}
		seen[st.node] = true
		l := Lagging{Node: st.node, ACKed: ts.ackVersion}
		if l.ACKed == "" {
			l.ACKed = "none"
		}
		if n := st.lastNACK; n != nil && n.TypeURL == typeURL && ts.nackCounter >= target {
			c := *n
			l.NACK = &c
		}
		behind = append(behind, l)
	}
	slices.SortFunc(behind, func(a, b Lagging) int { return cmp.Compare(a.Node, b.Node) })
	return true, behind
}
