package registry

import (
	"maps"
	"net"
	"net/netip"
	"strconv"

	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// Limits on what one endpoint may carry.
const (
	maxNameLen       = 253
	maxAttributes    = 64
	maxAttrKeyLen    = 63
	maxAttrValueLen  = 253
	maxHealthErrText = 1024
)

// validate checks the fields a runtime supplies. It returns nil, one
// *mesh.Error, or mesh.Errors, all EInvalid and naming the field.
func validate(ep *mesh.Endpoint) error {
	if ep == nil {
		return mesh.Errorf(mesh.EInvalid, "endpoint is nil")
	}
	var errs mesh.Errors
	add := func(field, format string, args ...any) {
		errs = append(errs, mesh.FieldError(field, format, args...))
	}
	checkName := func(field, v string) {
		switch {
		case v == "":
			add(field, "is required")
		case len(v) > maxNameLen:
			add(field, "is %d characters long, more than %d", len(v), maxNameLen)
		case !printable(v):
			add(field, "%q must be printable ASCII without spaces", v)
		}
	}
	checkName("id", ep.ID)
	checkName("service", ep.Service)
	if ep.Mesh != "" {
		checkName("mesh", ep.Mesh)
	}

	if ep.Address == "" {
		add("address", "is required")
	} else if a, err := netip.ParseAddr(ep.Address); err != nil {
		add("address", "%q is not an IP address", ep.Address)
	} else if a.Zone() != "" {
		add("address", "%q must not carry an IPv6 zone", ep.Address)
	} else if a.IsUnspecified() || a.IsMulticast() {
		add("address", "%q is not a unicast address a client can dial", ep.Address)
	}
	if ep.Port < 1 || ep.Port > 65535 {
		add("port", "%d is out of range 1-65535", ep.Port)
	}
	switch ep.State {
	case "", mesh.TaskPending, mesh.TaskRunning, mesh.TaskStopping, mesh.TaskStopped:
	default:
		add("state", "%q is not one of PENDING, RUNNING, STOPPING, STOPPED", ep.State)
	}
	if p := ep.Proc(); p.PID < 0 {
		add("process.pid", "%d is negative", p.PID)
	}
	if p := ep.Proc(); p.Restarts < 0 {
		add("process.restarts", "%d is negative", p.Restarts)
	}
	if len(ep.Attributes) > maxAttributes {
		add("attributes", "has %d entries, more than %d", len(ep.Attributes), maxAttributes)
	}
	for k, v := range ep.Attributes {
		switch {
		case k == "":
			add("attributes", "a key is empty")
		case len(k) > maxAttrKeyLen || !printable(k):
			add("attributes."+k, "key must be printable ASCII without spaces, at most %d characters", maxAttrKeyLen)
		case len(v) > maxAttrValueLen:
			add("attributes."+k, "value is %d characters long, more than %d", len(v), maxAttrValueLen)
		}
	}
	if ep.MetricsAddr != "" {
		_, port, err := net.SplitHostPort(ep.MetricsAddr)
		if err == nil {
			var n int
			n, err = strconv.Atoi(port)
			if err == nil && (n < 1 || n > 65535) {
				err = strconv.ErrRange
			}
		}
		if err != nil {
			add("metricsAddr", "%q is not host:port", ep.MetricsAddr)
		}
	}
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	return errs
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func clone(ep *mesh.Endpoint) *mesh.Endpoint {
	cp := *ep
	cp.Attributes = maps.Clone(ep.Attributes)
	if ep.Process != nil {
		p := *ep.Process
		cp.Process = &p
	}
	return &cp
}

// sameEndpoint reports whether a and b hold the same values.
func sameEndpoint(a, b *mesh.Endpoint) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ID == b.ID && a.Mesh == b.Mesh && a.Service == b.Service &&
		a.Address == b.Address && a.Port == b.Port && a.MetricsAddr == b.MetricsAddr &&
		(a.Process == nil) == (b.Process == nil) && a.Proc() == b.Proc() && a.State == b.State &&
		a.Health == b.Health && a.Draining == b.Draining &&
		a.LastHealthError == b.LastHealthError && maps.Equal(a.Attributes, b.Attributes)
}
