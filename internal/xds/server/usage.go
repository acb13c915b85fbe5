package server

// Usage is how many connected clients use some resources, and how far
// they follow them.
type Usage struct {
	// Total counts the clients subscribed to any of the resources (or to
	// every resource of the type).
	Total int
	// ACKed counts those of them that ACKed the type's version of the
	// first publish at or after the revision asked about (or a newer one).
	ACKed int
	// LastNACK is the newest NACK of that version or a newer one among
	// them, with its client's node id; nil if none.
	LastNACK *NACK
	NACKNode string
}

// Usage reports which connected clients use the resources names of
// typeURL, and how many of them ACKed what was published at or after
// revision rev. A client that subscribes to every resource of the type
// (Envoy's wildcard LDS and CDS) counts for every name.
func (s *Server) Usage(typeURL string, names []string, rev uint64) Usage {
	s.mu.Lock()
	defer s.mu.Unlock()
	target, ok := s.targetLocked(typeURL, rev)
	var u Usage
	seen := map[string]bool{}
	for _, st := range s.streams {
		ts := st.types[typeURL]
		if st.node == "" || ts == nil || !ts.subscribed || seen[st.node] {
			continue
		}
		uses := ts.wildcard
		for _, n := range names {
			if ts.names[n] {
				uses = true
				break
			}
		}
		if !uses {
			continue
		}
		seen[st.node] = true
		u.Total++
		if ok && ts.ackCounter >= target {
			u.ACKed++
			continue
		}
		if n := st.lastNACK; ok && n != nil && n.TypeURL == typeURL && s.counterOf(n.Version) >= target &&
			(u.LastNACK == nil || n.At.After(u.LastNACK.At)) {
			c := *n
			u.LastNACK, u.NACKNode = &c, st.node
		}
	}
	return u
}

// Changed returns a channel closed at the next change the server tracks:
// a publish, a client's request (an ACK or a NACK), a stream closing.
func (s *Server) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}
