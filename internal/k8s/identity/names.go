// Package identity gives pods on Kubernetes their workload identities: the
// mesh CA kept in a Secret, and a Secret per VirtualNode holding one
// certificate per service account of the node's pods, with the SPIFFE ID
// spiffe://MESH.gmesh.local/ns/NS/sa/SA/vn/NODE. The admission webhook
// mounts the node's Secret into each pod of a mesh with TLS on (the pod's
// service account's key as identity.pem, the CA bundle as ca.pem, the
// files grpc-go's file_watcher certificate provider reads); the leader
// keeps the Secrets: it creates them, adds a key when a pod with a new
// service account appears, and renews every certificate at half its
// lifetime. The kubelet swaps a Secret volume's files atomically, so a
// reader never sees a key beside another certificate.
package identity

import (
	"crypto/sha256"
	"encoding/hex"

	"k8s.io/apimachinery/pkg/types"

	"github.com/gmesh-dev/gmesh/internal/pki"
)

// Names shared by the Secrets' keeper and the webhook that mounts them.
const (
	// SecretPrefix begins the name of a VirtualNode's identity Secret.
	SecretPrefix = "gmesh-identity-"
	// BundleKey is the CA bundle's key in an identity Secret.
	BundleKey = "ca.pem"
	// LabelManaged marks the Secrets gmesh keeps (value "true"), so the
	// keeper watches only those.
	LabelManaged = "gmesh.dev/identity"
	// DefaultCASecret is the Secret that holds the mesh CA, in the
	// control plane's namespace.
	DefaultCASecret = "gmesh-ca"
	// VolumeName is the identity volume the webhook adds to a pod.
	VolumeName = "gmesh-identity"
	// MountPath is where the webhook mounts it in every container.
	MountPath = "/var/run/gmesh/identity"
	// IdentityFile and BundleFile are the files under MountPath: the
	// private key and certificate together, and the CA bundle (the names
	// gmesh up uses for local tasks).
	IdentityFile = pki.IdentityFile
	BundleFile   = pki.BundleFile
)

// maxName is the longest Secret name and Secret key.
const maxName = 253

// SecretName is the identity Secret of the VirtualNode named virtualNode
// (the Kubernetes object's name), in the node's namespace.
func SecretName(virtualNode string) string { return fit(SecretPrefix + virtualNode) }

// KeyFor is the key of a service account's identity in an identity
// Secret.
func KeyFor(serviceAccount string) string { return fit(serviceAccount + ".identity.pem") }

// fit keeps s within maxName: a longer s keeps its first characters and
// ends with a hash of the whole, so two long names never collide.
func fit(s string) string {
	if len(s) <= maxName {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	h := hex.EncodeToString(sum[:4])
	return s[:maxName-len(h)-1] + "-" + h
}

// Want is one VirtualNode whose pods need identities: it is in a mesh with
// TLS on and selects pods.
type Want struct {
	// Namespace and VirtualNode name the Kubernetes object (and so the
	// Secret: SecretName(VirtualNode) in Namespace); UID is its UID, the
	// Secret's owner, so deleting the node deletes its Secret.
	Namespace, VirtualNode string
	UID                    types.UID
	// Mesh and Node are the gmesh names of its mesh and node, the SPIFFE
	// ID's.
	Mesh, Node string
	// ServiceAccounts are those of the node's pods, sorted, without
	// duplicates ("default" for a pod that names none).
	ServiceAccounts []string
}

// ID is the SPIFFE ID of the node's pods that run as serviceAccount.
func (w Want) ID(serviceAccount string) pki.ID {
	return pki.ID{Mesh: w.Mesh, Namespace: w.Namespace, ServiceAccount: serviceAccount, VirtualNode: w.Node}
}
