package dashboard

import (
	"github.com/gmesh-dev/gmesh/internal/analysis"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// counts are request counters, cumulative or a delta.
type counts struct {
	requests, errors int64
}

// traffic turns cumulative per-task counters into per-poll deltas. A task
// incarnation is keyed by endpoint id and pid (analysis.TaskKey), so a
// restarted task's fresh counters are counted from zero; a counter that went
// down under the same key is treated as a reset (its new value is the
// delta), as Prometheus's increase() does.
//
// The counters tasks had before the dashboard first saw them are not
// traffic of one interval: the first sample of a task that was already
// registered at the first poll is a baseline. A task registered later (a new
// version's, or a restart) counts from zero.
type traffic struct {
	prev     map[string]counts // TaskKey -> last cumulative counters
	baseline map[string]bool   // endpoint ids whose first sample is a baseline
	started  bool
}

func newTraffic() *traffic {
	return &traffic{prev: map[string]counts{}, baseline: map[string]bool{}}
}

// begin marks the endpoints present at the first poll as baselines.
func (t *traffic) begin(eps []*mesh.Endpoint) {
	if t.started {
		return
	}
	t.started = true
	for _, ep := range eps {
		t.baseline[ep.ID] = true
	}
}

// observe records ep's cumulative counters and returns the delta since the
// previous observation.
func (t *traffic) observe(ep *mesh.Endpoint, s analysis.Sample) counts {
	key := analysis.TaskKey(ep.ID, ep.Proc().PID)
	cur := counts{s.Requests, s.Errors}
	p, seen := t.prev[key]
	t.prev[key] = cur
	switch {
	case seen && cur.requests >= p.requests && cur.errors >= p.errors:
		return counts{cur.requests - p.requests, cur.errors - p.errors}
	case seen: // counter reset under the same key
		return cur
	case t.baseline[ep.ID]:
		delete(t.baseline, ep.ID)
		return counts{}
	default: // a new task or a new incarnation
		return cur
	}
}

// gc forgets task incarnations no longer registered.
func (t *traffic) gc(eps []*mesh.Endpoint) {
	live := make(map[string]bool, len(eps))
	ids := make(map[string]bool, len(eps))
	for _, ep := range eps {
		live[analysis.TaskKey(ep.ID, ep.Proc().PID)] = true
		ids[ep.ID] = true
	}
	for k := range t.prev {
		if !live[k] {
			delete(t.prev, k)
		}
	}
	for id := range t.baseline {
		if !ids[id] {
			delete(t.baseline, id)
		}
	}
}
