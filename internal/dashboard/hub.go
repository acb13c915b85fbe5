package dashboard

import (
	"encoding/json"
	"strconv"
	"sync"
)

// hub holds the current state and the history, and fans each poll's event
// out to the SSE subscribers. Publishing never blocks: each subscriber has a
// bounded queue, and one whose queue is full is dropped (its browser
// reconnects and starts again from a full snapshot).
type hub struct {
	mu      sync.Mutex
	state   *State
	history []*Point // oldest first, at most max
	max     int
	subs    map[*subscriber]struct{}
	buf     int
	dropped uint64
	closed  bool
}

type subscriber struct {
	ch   chan []byte
	gone chan struct{} // closed when the hub drops the subscriber
}

func newHub(maxPoints, buf int) *hub {
	return &hub{max: max(maxPoints, 1), subs: map[*subscriber]struct{}{}, buf: buf}
}

// setState sets the state without publishing (the initial empty state).
func (h *hub) setState(s *State) {
	h.mu.Lock()
	h.state = s
	h.mu.Unlock()
}

// current returns the current state; callers must not modify it.
func (h *hub) current() *State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.state
}

// snapshot returns the current state with its history.
func (h *hub) snapshot() *State {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.snapshotLocked()
}

func (h *hub) snapshotLocked() *State {
	s := *h.state
	s.Point = nil
	s.History = append(make([]*Point, 0, len(h.history)), h.history...)
	return &s
}

// publish makes s the current state, appends p (if any) to the history and
// sends an update event to every subscriber.
func (h *hub) publish(s *State, p *Point) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.Seq = h.state.Seq + 1
	s.History = nil
	s.Point = p
	h.state = s
	if p != nil {
		if len(h.history) >= h.max {
			// Shift in place: the backing array keeps its size.
			n := copy(h.history, h.history[len(h.history)-h.max+1:])
			clear(h.history[n:])
			h.history = h.history[:n]
		}
		h.history = append(h.history, p)
	}
	if len(h.subs) == 0 {
		return
	}
	ev := event("update", s)
	for sub := range h.subs {
		select {
		case sub.ch <- ev:
		default:
			delete(h.subs, sub)
			close(sub.gone)
			h.dropped++
		}
	}
}

// subscribe registers a subscriber and returns it with the snapshot event
// to send first; no update is lost or repeated between the two.
func (h *hub) subscribe() (*subscriber, []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sub := &subscriber{ch: make(chan []byte, h.buf), gone: make(chan struct{})}
	if h.closed {
		close(sub.gone)
	} else {
		h.subs[sub] = struct{}{}
	}
	return sub, event("snapshot", h.snapshotLocked())
}

func (h *hub) unsubscribe(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[sub]; ok {
		delete(h.subs, sub)
		close(sub.gone)
	}
}

// closeAll ends every subscription (the poller stopped).
func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for sub := range h.subs {
		delete(h.subs, sub)
		close(sub.gone)
	}
}

// stats reports the subscriber count and how many were dropped.
func (h *hub) stats() (subs int, dropped uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs), h.dropped
}

// event encodes one SSE event.
func event(name string, s *State) []byte {
	b, err := json.Marshal(s)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"error": "encode state: " + err.Error()})
	}
	out := make([]byte, 0, len(b)+64)
	out = append(out, "event: "...)
	out = append(out, name...)
	out = append(out, "\nid: "...)
	out = strconv.AppendUint(out, s.Seq, 10)
	out = append(out, "\ndata: "...)
	out = append(out, b...)
	out = append(out, "\n\n"...)
	return out
}
