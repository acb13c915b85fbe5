package pki

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// TrustDomainSuffix ends every gmesh trust domain: a mesh named M is the
// trust domain "M.gmesh.local".
const TrustDomainSuffix = ".gmesh.local"

// Limits from the SPIFFE ID specification.
const (
	maxIDLen          = 2048
	maxTrustDomainLen = 255
)

// ID is a workload's SPIFFE ID: the identity in its certificate's URI SAN.
//
// The format names the mesh in the trust domain and the workload in the path,
// as key/value segments in a fixed order:
//
//	spiffe://MESH.gmesh.local/vn/NODE                  a task gmesh runs on this machine
//	spiffe://MESH.gmesh.local/ns/NS/sa/SA/vn/NODE      a pod on Kubernetes (namespace, service account)
//	spiffe://MESH.gmesh.local/cp/COMPONENT             a part of the control plane (its health checker)
//
// Keys are fixed words, so an ID is read by its keys and not by position,
// and a later key (say a cluster) can be added before "vn" without making
// old IDs mean something else. Every value is one path segment of gmesh's
// name alphabet (lower-case letters, digits, '-', '.', starting and ending
// with a letter or digit), so no value can hold a '/'.
type ID struct {
	Mesh string
	// Namespace and ServiceAccount are set together (Kubernetes) or not at
	// all (local tasks).
	Namespace      string
	ServiceAccount string
	VirtualNode    string
	// Component names a part of gmesh's control plane instead of a
	// workload ("health-checker"); exactly one of VirtualNode and
	// Component is set.
	Component string
}

// HealthChecker is the ID of the control plane's health checker in a mesh:
// it calls STRICT workloads with a certificate of its own.
func HealthChecker(meshName string) ID { return ID{Mesh: meshName, Component: "health-checker"} }

// TrustDomain is the ID's trust domain, "MESH.gmesh.local".
func (id ID) TrustDomain() string { return id.Mesh + TrustDomainSuffix }

// Path is the ID's path, "/vn/NODE" or "/ns/NS/sa/SA/vn/NODE".
func (id ID) Path() string {
	if id.Component != "" {
		return "/cp/" + id.Component
	}
	var b strings.Builder
	if id.Namespace != "" || id.ServiceAccount != "" {
		b.WriteString("/ns/" + id.Namespace + "/sa/" + id.ServiceAccount)
	}
	b.WriteString("/vn/" + id.VirtualNode)
	return b.String()
}

// String is the ID as a URI. It does not check the ID; Validate does.
func (id ID) String() string { return "spiffe://" + id.TrustDomain() + id.Path() }

// URL is the ID as a *url.URL, for a certificate's URIs.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain(), Path: id.Path()}
}

// Validate reports what is wrong with id, naming the part.
func (id ID) Validate() error {
	if err := checkValue("mesh", id.Mesh); err != nil {
		return err
	}
	if len(id.TrustDomain()) > maxTrustDomainLen {
		return fmt.Errorf("spiffe id: trust domain %q is longer than %d bytes", id.TrustDomain(), maxTrustDomainLen)
	}
	if (id.Namespace == "") != (id.ServiceAccount == "") {
		return fmt.Errorf("spiffe id: namespace %q and service account %q must be given together", id.Namespace, id.ServiceAccount)
	}
	if id.Namespace != "" {
		if err := checkValue("namespace", id.Namespace); err != nil {
			return err
		}
		if err := checkValue("service account", id.ServiceAccount); err != nil {
			return err
		}
	}
	if id.Component != "" {
		if id.VirtualNode != "" || id.Namespace != "" {
			return fmt.Errorf("spiffe id: component %q goes with neither a virtual node nor a namespace", id.Component)
		}
		if err := checkValue("component", id.Component); err != nil {
			return err
		}
	} else if err := checkValue("virtual node", id.VirtualNode); err != nil {
		return err
	}
	if n := len(id.String()); n > maxIDLen {
		return fmt.Errorf("spiffe id: %d bytes, over the limit of %d", n, maxIDLen)
	}
	return nil
}

// checkValue accepts gmesh's name alphabet: [a-z0-9]([-a-z0-9.]*[a-z0-9])?.
func checkValue(what, v string) error {
	if v == "" {
		return fmt.Errorf("spiffe id: empty %s", what)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if alnum || (c == '-' || c == '.') && i > 0 && i < len(v)-1 {
			continue
		}
		return fmt.Errorf("spiffe id: %s %q: want lower-case letters, digits, '-' and '.', starting and ending with a letter or digit", what, v)
	}
	return nil
}

// ParseID parses a gmesh SPIFFE ID. It accepts exactly what ID.String
// produces for a valid ID: no port, user, query, fragment, percent-encoding,
// upper case or empty segment, and only the keys above in their order.
func ParseID(s string) (ID, error) {
	if len(s) > maxIDLen {
		return ID{}, fmt.Errorf("spiffe id: %d bytes, over the limit of %d", len(s), maxIDLen)
	}
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return ID{}, fmt.Errorf("spiffe id %q: want the scheme spiffe://", s)
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return ID{}, fmt.Errorf("spiffe id %q: no path; want spiffe://MESH%s/vn/NODE", s, TrustDomainSuffix)
	}
	meshName, ok := strings.CutSuffix(td, TrustDomainSuffix)
	if !ok {
		return ID{}, fmt.Errorf("spiffe id %q: trust domain %q is not a gmesh mesh's (MESH%s)", s, td, TrustDomainSuffix)
	}
	id := ID{Mesh: meshName}
	segs := strings.Split(path, "/")
	switch {
	case len(segs) == 2 && segs[0] == "vn":
		id.VirtualNode = segs[1]
	case len(segs) == 6 && segs[0] == "ns" && segs[2] == "sa" && segs[4] == "vn":
		id.Namespace, id.ServiceAccount, id.VirtualNode = segs[1], segs[3], segs[5]
	case len(segs) == 2 && segs[0] == "cp":
		id.Component = segs[1]
		if id.Component == "" {
			return ID{}, fmt.Errorf("spiffe id %q: empty component", s)
		}
	default:
		return ID{}, fmt.Errorf("spiffe id %q: path /%s: want /vn/NODE, /ns/NS/sa/SA/vn/NODE or /cp/COMPONENT", s, path)
	}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("%w (in %q)", err, s)
	}
	return id, nil
}

// errNoID is returned by IDFromURIs when a certificate names no gmesh ID.
var errNoID = errors.New("no spiffe:// URI SAN")

// IDFromURIs returns the one SPIFFE ID among a certificate's URI SANs. A
// SPIFFE certificate carries exactly one.
func IDFromURIs(uris []*url.URL) (ID, error) {
	var found []string
	for _, u := range uris {
		if u.Scheme == "spiffe" {
			found = append(found, u.String())
		}
	}
	return oneID(found)
}

// oneID parses the one SPIFFE ID of found, the spiffe URIs of a
// certificate; none, or more than one, is an error.
func oneID(found []string) (ID, error) {
	switch len(found) {
	case 0:
		return ID{}, errNoID
	case 1:
		return ParseID(found[0])
	default:
		return ID{}, fmt.Errorf("%d spiffe:// URI SANs (%s); want exactly one", len(found), strings.Join(found, ", "))
	}
}

// XDSServer is the ID of the control plane's xDS server in a mesh: the
// certificate it presents to the mesh's xDS clients.
func XDSServer(meshName string) ID { return ID{Mesh: meshName, Component: "xds"} }

// oidSubjectAltName is the certificate extension holding URI SANs.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// IDFromCert returns the one SPIFFE ID among a certificate's URI SANs,
// read as the certificate's bytes say them. IDFromURIs reads them after
// net/url has parsed and printed them again, which makes "SPIFFE://" of
// "spiffe://" and drops an empty "#": such an ID is not one ID.String
// prints, so IDFromCert refuses it. A URI counts as a SPIFFE ID when its
// scheme is "spiffe" in any case.
func IDFromCert(c *x509.Certificate) (ID, error) {
	raw, err := rawURISANs(c)
	if err != nil {
		return ID{}, err
	}
	var found []string
	for _, u := range raw {
		if scheme, _, ok := strings.Cut(u, ":"); ok && strings.EqualFold(scheme, "spiffe") {
			found = append(found, u)
		}
	}
	return oneID(found)
}

// rawURISANs returns the URI SANs of c as its DER says them.
func rawURISANs(c *x509.Certificate) ([]string, error) {
	var out []string
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq asn1.RawValue
		if rest, err := asn1.Unmarshal(ext.Value, &seq); err != nil || len(rest) > 0 {
			return nil, fmt.Errorf("subject alternative names: malformed extension")
		}
		for rest := seq.Bytes; len(rest) > 0; {
			var v asn1.RawValue
			var err error
			if rest, err = asn1.Unmarshal(rest, &v); err != nil {
				return nil, fmt.Errorf("subject alternative names: %w", err)
			}
			if v.Class == asn1.ClassContextSpecific && v.Tag == 6 { // uniformResourceIdentifier
				out = append(out, string(v.Bytes))
			}
		}
	}
	return out, nil
}

// valuePattern is checkValue's alphabet as an RE2 expression: one path
// segment.
const valuePattern = `[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?`

// NodePattern is an anchored RE2 expression matching every ID of a
// workload of virtual node virtualNode of mesh meshName, wherever it runs:
// the local form spiffe://MESH.gmesh.local/vn/NODE exactly, and the
// Kubernetes form spiffe://MESH.gmesh.local/ns/NS/sa/SA/vn/NODE with any
// namespace and service account, each one segment of gmesh's name alphabet
// (what ParseID accepts). The mesh and node names are quoted. It matches
// nothing else: not another mesh, node or key, not an ID with more or
// fewer segments.
func NodePattern(meshName, virtualNode string) string {
	return "^spiffe://" + regexp.QuoteMeta(meshName+TrustDomainSuffix) +
		"/(?:ns/" + valuePattern + "/sa/" + valuePattern + "/)?vn/" + regexp.QuoteMeta(virtualNode) + "$"
}
