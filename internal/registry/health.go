package registry

import (
	"strings"
	"time"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Defaults applied to a health check policy whose fields are unset (App
// Mesh's own defaults), and the floor under any interval.
const (
	DefaultIntervalMillis     = 5000
	DefaultTimeoutMillis      = 2000
	DefaultHealthyThreshold   = 2
	DefaultUnhealthyThreshold = 2
	DefaultPath               = "/"
	minInterval               = 10 * time.Millisecond
)

// normalize returns a copy of hc with defaults filled in for ep, or nil.
func normalize(hc *mesh.HealthCheck, ep *mesh.Endpoint) *mesh.HealthCheck {
	if hc == nil {
		return nil
	}
	n := *hc
	n.Protocol = strings.ToLower(n.Protocol)
	if n.IntervalMillis <= 0 {
		n.IntervalMillis = DefaultIntervalMillis
	}
	if n.TimeoutMillis <= 0 {
		n.TimeoutMillis = DefaultTimeoutMillis
	}
	if n.HealthyThreshold < 1 {
		n.HealthyThreshold = DefaultHealthyThreshold
	}
	if n.UnhealthyThreshold < 1 {
		n.UnhealthyThreshold = DefaultUnhealthyThreshold
	}
	if n.Port <= 0 || n.Port > 65535 {
		n.Port = ep.Port
	}
	if (n.Protocol == mesh.ProtocolHTTP || n.Protocol == mesh.ProtocolHTTP2) && n.Path == "" {
		n.Path = DefaultPath
	}
	return &n
}

func interval(hc *mesh.HealthCheck) time.Duration {
	return max(time.Duration(hc.IntervalMillis)*time.Millisecond, minInterval)
}

func timeout(hc *mesh.HealthCheck) time.Duration {
	return time.Duration(hc.TimeoutMillis) * time.Millisecond
}

func samePolicy(a, b *mesh.HealthCheck) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// entry is the registry's record of one endpoint. All fields are guarded by
// Registry.mu.
type entry struct {
	ep *mesh.Endpoint
	// policy is the normalized active check, nil for none.
	policy *mesh.HealthCheck
	// credsKey is the key of its credentials (CredsFunc).
	credsKey string
	// passes and fails count consecutive check results.
	passes, fails int
	// everHealthy is whether this process has been HEALTHY since it started
	// RUNNING (or since Restore loaded it healthy).
	everHealthy bool
	// gen identifies the current checker; results from another are dropped.
	gen    uint64
	cancel func()
}

// resetHealth forgets what checks said: a new process, or a new address.
func (e *entry) resetHealth() {
	e.ep.Health = mesh.HealthUnknown
	e.ep.LastHealthError = ""
	e.passes, e.fails = 0, 0
	e.everHealthy = false
}

// settle applies the rules that need no check: a RUNNING endpoint without an
// active check is HEALTHY; a PENDING or STOPPED one is UNKNOWN (no process to
// judge); a STOPPING one keeps its last health, while Serving() is already
// false because of its state.
func (e *entry) settle() {
	switch e.ep.State {
	case mesh.TaskRunning:
		if e.policy == nil {
			e.ep.Health = mesh.HealthHealthy
			e.ep.LastHealthError = ""
			e.everHealthy = true
		}
	case mesh.TaskPending, mesh.TaskStopped:
		e.resetHealth()
	}
}

// observe applies one check result with the policy's thresholds:
//
//   - a pass turns an endpoint HEALTHY if this process has never been healthy
//     (one pass is enough to start), or after healthyThreshold consecutive
//     passes once it has fallen;
//   - unhealthyThreshold consecutive fails turn it UNHEALTHY (from HEALTHY or
//     from UNKNOWN);
//   - a failure's text goes to LastHealthError, which becoming HEALTHY clears.
func (e *entry) observe(err error) {
	ep := e.ep
	if err == nil {
		e.fails = 0
		if e.passes < e.policy.HealthyThreshold {
			e.passes++
		}
		if ep.Health != mesh.HealthHealthy && (!e.everHealthy || e.passes >= e.policy.HealthyThreshold) {
			ep.Health = mesh.HealthHealthy
			ep.LastHealthError = ""
			e.everHealthy = true
		}
		return
	}
	e.passes = 0
	if e.fails < e.policy.UnhealthyThreshold {
		e.fails++
	}
	msg := err.Error()
	if len(msg) > maxHealthErrText {
		msg = strings.ToValidUTF8(msg[:maxHealthErrText], "")
	}
	ep.LastHealthError = msg
	if ep.Health != mesh.HealthUnhealthy && e.fails >= e.policy.UnhealthyThreshold {
		ep.Health = mesh.HealthUnhealthy
	}
}
