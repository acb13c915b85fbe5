package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path"
	"strconv"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"

	"github.com/gmesh-dev/gmesh/internal/clock"
	"github.com/gmesh-dev/gmesh/internal/k8s/identity"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

// Injection is asked for by a namespace label and declined by a pod
// annotation.
const (
	// LabelInject on a namespace: "enabled" injects its pods, "disabled"
	// does not (even with App Mesh's label). On a pod, as an annotation or
	// a label, "disabled" opts the pod out (the label keeps the pod from
	// being sent to the webhook at all: the configuration's
	// objectSelector).
	LabelInject = "gmesh.dev/inject"
	// LabelAppMeshInject is App Mesh's namespace label (and pod
	// annotation), honoured the same way for users who migrate.
	LabelAppMeshInject = "appmesh.k8s.aws/sidecarInjectorWebhook"
	ValueEnabled       = "enabled"
	ValueDisabled      = "disabled"
)

// The environment the injector adds.
const (
	EnvPodName      = "POD_NAME"
	EnvPodNamespace = "POD_NAMESPACE"
	// NodeID is the xDS node id of an injected pod: Kubernetes expands
	// $(VAR) from the container's earlier env entries. The downward API,
	// not the name at admission: a pod made from generateName (every
	// Deployment's) has no name yet when it is admitted.
	NodeID = "$(" + EnvPodNamespace + ")/$(" + EnvPodName + ")"
)

// InjectionWanted reports whether a pod with podLabels and podAnnotations
// in a namespace with nsLabels gets the bootstrap, and why.
func InjectionWanted(nsLabels, podLabels, podAnnotations map[string]string) (bool, string) {
	for _, k := range []string{LabelInject, LabelAppMeshInject} {
		if podAnnotations[k] == ValueDisabled {
			return false, fmt.Sprintf("the pod's annotation %s is %q", k, ValueDisabled)
		}
	}
	if podLabels[LabelInject] == ValueDisabled {
		return false, fmt.Sprintf("the pod's label %s is %q", LabelInject, ValueDisabled)
	}
	switch nsLabels[LabelInject] {
	case ValueEnabled:
		return true, fmt.Sprintf("the namespace's label %s is %q", LabelInject, ValueEnabled)
	case ValueDisabled:
		return false, fmt.Sprintf("the namespace's label %s is %q", LabelInject, ValueDisabled)
	}
	if nsLabels[LabelAppMeshInject] == ValueEnabled {
		return true, fmt.Sprintf("the namespace's label %s is %q", LabelAppMeshInject, ValueEnabled)
	}
	return false, fmt.Sprintf("the namespace has neither label %s nor %s set to %q", LabelInject, LabelAppMeshInject, ValueEnabled)
}

// XDSAddress tells the injector the control plane's xDS address
// (host:port).
type XDSAddress interface {
	XDSAddress(ctx context.Context) (string, error)
}

// StaticAddress is an address given by flag.
type StaticAddress string

// XDSAddress returns a.
func (a StaticAddress) XDSAddress(context.Context) (string, error) { return string(a), nil }

// ServiceAddress is the ClusterIP and xDS port of the control plane's own
// Service, looked up through the API (a GET, kept for a minute): clusters
// without cluster DNS have no name for it, and pods reach a ClusterIP
// wherever kube-proxy (or its equivalent) runs.
type ServiceAddress struct {
	Kube            kubernetes.Interface
	Namespace, Name string
	// Port is the name of the Service's xDS port; default
	// DefaultXDSPortName. A Service with one port needs none.
	Port  string
	Clock clock.Clock

	mu      sync.Mutex
	addr    string
	fetched time.Time
}

var _ XDSAddress = (*ServiceAddress)(nil)

// serviceAddressTTL is how long a looked-up address is used.
const serviceAddressTTL = time.Minute

// XDSAddress returns CLUSTERIP:PORT.
func (s *ServiceAddress) XDSAddress(ctx context.Context) (string, error) {
	clk := s.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addr != "" && clk.Now().Sub(s.fetched) < serviceAddressTTL {
		return s.addr, nil
	}
	svc, err := s.Kube.CoreV1().Services(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("service %s/%s: %w (set --xds-address)", s.Namespace, s.Name, err)
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return "", fmt.Errorf("service %s/%s: spec.clusterIP: none (a headless service): set --xds-address", s.Namespace, s.Name)
	}
	want := s.Port
	if want == "" {
		want = DefaultXDSPortName
	}
	var port int32
	for _, p := range svc.Spec.Ports {
		if p.Name == want || len(svc.Spec.Ports) == 1 {
			port = p.Port
			break
		}
	}
	if port == 0 {
		return "", fmt.Errorf("service %s/%s: spec.ports: no port named %q", s.Namespace, s.Name, want)
	}
	s.addr = net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(port)))
	s.fetched = clk.Now()
	return s.addr, nil
}

// PodIdentities finds the VirtualNode of a mesh with TLS on that selects a
// pod: ok false when none does, an error when two do (the control plane's
// Source implements it over its informers' caches).
type PodIdentities interface {
	PodIdentity(namespace string, podLabels map[string]string) (want identity.Want, ok bool, err error)
}

// CatchUpper is a PodIdentities whose answers come from a cache: CatchUp
// waits (bounded) until the cache holds what the API server holds for a
// namespace, so that a pod applied together with its VirtualNode gets its
// identity. The injector calls it before PodIdentity when the
// PodIdentities has it; an error is logged and the pod judged anyway.
type CatchUpper interface {
	CatchUp(ctx context.Context, namespace string) error
}

// DefaultIdentityRefresh is how often an injected bootstrap's certificate
// provider rereads the identity files: the kubelet's propagation of a
// renewed Secret (up to its sync period plus its cache's TTL, a minute or
// more) is the slow part, so a shorter interval gains nothing.
const DefaultIdentityRefresh = 10 * time.Second

// IdentityOptions give the pods of a mesh with TLS on their workload
// identity: the injector mounts the identity Secret of the pod's
// VirtualNode and names its files in the bootstrap.
type IdentityOptions struct {
	// Identities finds a pod's VirtualNode; nil gives no pod an identity.
	Identities PodIdentities
	// Refresh is the certificate provider's refresh_interval; default
	// DefaultIdentityRefresh.
	Refresh time.Duration
	// ChannelTLS also secures the xDS channel with the identity (gRFC A65
	// "tls" channel_creds). Off by default: the control plane does not
	// serve xDS over TLS on Kubernetes yet, and a pod whose bootstrap asks
	// for it would never get its configuration.
	ChannelTLS bool
}

// Injector is the mutating webhook for pods.
type Injector struct {
	addr XDSAddress
	// namespaces is the informers' cache; kube reads a namespace the cache
	// does not have yet (one created a moment before its pods).
	namespaces listerscorev1.NamespaceLister
	kube       kubernetes.Interface
	id         IdentityOptions
	log        *slog.Logger
}

// NewInjector returns an injector that gives pods addr's address and
// reads namespaces from the lister (may be nil), else from kube; id gives
// the pods of meshes with TLS on their identity (its zero value: none).
func NewInjector(addr XDSAddress, namespaces listerscorev1.NamespaceLister, kube kubernetes.Interface, id IdentityOptions, logger *slog.Logger) *Injector {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if id.Refresh <= 0 {
		id.Refresh = DefaultIdentityRefresh
	}
	return &Injector{addr: addr, namespaces: namespaces, kube: kube, id: id, log: logger}
}

var _ Reviewer = (*Injector)(nil)

func (in *Injector) namespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	if in.namespaces != nil {
		ns, err := in.namespaces.Get(name)
		if err == nil {
			return ns.Labels, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
	}
	ns, err := in.kube.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return ns.Labels, nil
}

// Review adds the environment to a pod being created.
func (in *Injector) Review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Resource.Resource != "pods" || req.SubResource != "" || req.Operation != admissionv1.Create {
		return allow()
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(400, metav1.StatusReasonBadRequest, "gmesh injector: decode the pod: "+err.Error())
	}
	nsLabels, err := in.namespaceLabels(ctx, req.Namespace)
	if err != nil {
		return deny(500, metav1.StatusReasonInternalError, fmt.Sprintf("gmesh injector: namespace %q: %v", req.Namespace, err))
	}
	if ok, why := InjectionWanted(nsLabels, pod.Labels, pod.Annotations); !ok {
		in.log.Debug("pod not injected", "namespace", req.Namespace, "pod", podName(&pod), "why", why)
		return allow()
	}
	addr, err := in.addr.XDSAddress(ctx)
	if err != nil {
		return deny(500, metav1.StatusReasonInternalError, "gmesh injector: the control plane's xDS address: "+err.Error())
	}
	var mount *IdentityMount
	if in.id.Identities != nil {
		if c, ok := in.id.Identities.(CatchUpper); ok {
			// A pod applied with its VirtualNode: wait for the cache to see it.
			if err := c.CatchUp(ctx, req.Namespace); err != nil {
				in.log.Warn("pod judged on a cache that may be behind", "namespace", req.Namespace, "pod", podName(&pod), "err", err)
			}
		}
		want, ok, err := in.id.Identities.PodIdentity(req.Namespace, pod.Labels)
		if err == nil && ok && (want.VirtualNode == "" || (want.Namespace != "" && want.Namespace != req.Namespace)) {
			// A Secret volume can only name a Secret of the pod's namespace.
			err = fmt.Errorf("virtual node %s/%s: want a node of the pod's namespace", want.Namespace, want.VirtualNode)
		}
		if err != nil {
			return deny(500, metav1.StatusReasonInternalError, fmt.Sprintf("gmesh injector: pod %s/%s: its identity: %v", req.Namespace, podName(&pod), err))
		}
		if ok {
			mount = &IdentityMount{
				SecretName:     identity.SecretName(want.VirtualNode),
				ServiceAccount: serviceAccount(&pod),
				Refresh:        in.id.Refresh,
				ChannelTLS:     in.id.ChannelTLS,
			}
		}
	}
	patch, err := InjectIdentityPatch(&pod, addr, mount)
	if err != nil {
		return deny(500, metav1.StatusReasonInternalError, "gmesh injector: "+err.Error())
	}
	resp := allow()
	if len(patch) > 0 {
		b, err := json.Marshal(patch)
		if err != nil {
			return deny(500, metav1.StatusReasonInternalError, "gmesh injector: encode the patch: "+err.Error())
		}
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = b, &pt
		in.log.Debug("pod injected", "namespace", req.Namespace, "pod", podName(&pod), "xds", addr, "identity", mount.secret(), "operations", len(patch))
	}
	return resp
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "*"
}

// serviceAccount is the pod's service account: the API server's
// ServiceAccount admission names "default" before webhooks run, but a pod
// reviewed without it names none.
func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName != "" {
		return p.Spec.ServiceAccountName
	}
	return "default"
}

// IdentityMount is what a pod of a mesh with TLS on gets besides the
// environment: its VirtualNode's identity Secret mounted read-only at
// identity.MountPath in every container, and a bootstrap naming the
// mounted files.
type IdentityMount struct {
	// SecretName is the VirtualNode's identity Secret
	// (identity.SecretName), in the pod's namespace.
	SecretName string
	// ServiceAccount is the pod's: its key (identity.KeyFor) is mounted
	// as identity.IdentityFile.
	ServiceAccount string
	// Refresh is the certificate provider's refresh_interval (0: grpc-go's
	// default).
	Refresh time.Duration
	// ChannelTLS also secures the xDS channel with the identity (gRFC
	// A65).
	ChannelTLS bool
}

// secret names m's Secret for logs ("" for none).
func (m *IdentityMount) secret() string {
	if m == nil {
		return ""
	}
	return m.SecretName
}

// identityFileMode is the identity file's mode: it holds the private key.
// The kubelet adds group read for the pod's securityContext.fsGroup, which
// a container that runs as another user than root needs.
const identityFileMode int32 = 0o400

// Volume is the Secret volume identity.VolumeName.
func (m *IdentityMount) Volume() corev1.Volume {
	mode := identityFileMode
	return corev1.Volume{Name: identity.VolumeName, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: m.SecretName,
		Items: []corev1.KeyToPath{
			{Key: identity.KeyFor(m.ServiceAccount), Path: identity.IdentityFile, Mode: &mode},
			{Key: identity.BundleKey, Path: identity.BundleFile},
		},
	}}}
}

// TLS is the bootstrap's certificate files: the mounted identity (key and
// certificate in one file) and CA bundle.
func (m *IdentityMount) TLS() *bootstrap.TLS {
	id := path.Join(identity.MountPath, identity.IdentityFile)
	return &bootstrap.TLS{
		CertificateFile:   id,
		PrivateKeyFile:    id,
		CACertificateFile: path.Join(identity.MountPath, identity.BundleFile),
		RefreshInterval:   m.Refresh,
		Channel:           m.ChannelTLS,
	}
}

// BootstrapJSON is the bootstrap every injected container gets, compact.
func BootstrapJSON(xdsAddr string) (string, error) {
	return bootstrapJSON(xdsAddr, nil)
}

// bootstrapJSON is the bootstrap of a pod with the identity m (nil:
// none), compact.
func bootstrapJSON(xdsAddr string, m *IdentityMount) (string, error) {
	cfg := bootstrap.Config{ServerURI: xdsAddr, NodeID: NodeID}
	if m != nil {
		cfg.TLS = m.TLS()
	}
	b, err := cfg.JSON()
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return "", fmt.Errorf("bootstrap: %w", err)
	}
	return out.String(), nil
}

// InjectPatch is the JSON patch that gives every container and init
// container of pod what it does not set itself: POD_NAME and
// POD_NAMESPACE from the downward API, then GRPC_XDS_BOOTSTRAP_CONFIG
// (unless it sets GRPC_XDS_BOOTSTRAP, which every gRPC prefers). A pod
// that has them all gets an empty patch, so a reinvocation changes nothing.
func InjectPatch(pod *corev1.Pod, xdsAddr string) ([]PatchOp, error) {
	return InjectIdentityPatch(pod, xdsAddr, nil)
}

// InjectIdentityPatch is InjectPatch for a pod with the identity m (nil:
// none, the same patch as InjectPatch): the bootstrap also names the
// identity files, and the pod also gets the volume identity.VolumeName
// (unless it has a volume of that name) mounted read-only at
// identity.MountPath in every container and init container (unless the
// container mounts that volume or something at that path already). A
// container that sets its own bootstrap keeps it, and still gets the
// mount. A pod that has it all gets an empty patch.
func InjectIdentityPatch(pod *corev1.Pod, xdsAddr string, m *IdentityMount) ([]PatchOp, error) {
	if m != nil && (m.SecretName == "" || m.ServiceAccount == "") {
		return nil, errors.New("identity: a secret name and a service account are required")
	}
	bs, err := bootstrapJSON(xdsAddr, m)
	if err != nil {
		return nil, err
	}
	var ops []PatchOp
	if m != nil && !hasVolume(pod.Spec.Volumes, identity.VolumeName) {
		if len(pod.Spec.Volumes) == 0 {
			ops = append(ops, PatchOp{Op: "add", Path: "/spec/volumes", Value: []corev1.Volume{m.Volume()}})
		} else {
			ops = append(ops, PatchOp{Op: "add", Path: "/spec/volumes/-", Value: m.Volume()})
		}
	}
	for _, group := range []struct {
		path       string
		containers []corev1.Container
	}{{"/spec/initContainers", pod.Spec.InitContainers}, {"/spec/containers", pod.Spec.Containers}} {
		for i, c := range group.containers {
			if add := envToAdd(c.Env, bs); len(add) > 0 {
				path := fmt.Sprintf("%s/%d/env", group.path, i)
				if len(c.Env) == 0 {
					ops = append(ops, PatchOp{Op: "add", Path: path, Value: add})
				} else {
					for _, e := range add {
						ops = append(ops, PatchOp{Op: "add", Path: path + "/-", Value: e})
					}
				}
			}
			if m != nil && !hasIdentityMount(c.VolumeMounts) {
				vm := corev1.VolumeMount{Name: identity.VolumeName, MountPath: identity.MountPath, ReadOnly: true}
				path := fmt.Sprintf("%s/%d/volumeMounts", group.path, i)
				if len(c.VolumeMounts) == 0 {
					ops = append(ops, PatchOp{Op: "add", Path: path, Value: []corev1.VolumeMount{vm}})
				} else {
					ops = append(ops, PatchOp{Op: "add", Path: path + "/-", Value: vm})
				}
			}
		}
	}
	return ops, nil
}

func hasVolume(vs []corev1.Volume, name string) bool {
	for _, v := range vs {
		if v.Name == name {
			return true
		}
	}
	return false
}

// hasIdentityMount: the container mounts the identity volume, or
// something else at its path (a second mount there would make the pod
// invalid).
func hasIdentityMount(ms []corev1.VolumeMount) bool {
	for _, m := range ms {
		if m.Name == identity.VolumeName || path.Clean(m.MountPath) == identity.MountPath {
			return true
		}
	}
	return false
}

func envToAdd(env []corev1.EnvVar, bootstrapJSON string) []corev1.EnvVar {
	has := map[string]bool{}
	for _, e := range env {
		has[e.Name] = true
	}
	var add []corev1.EnvVar
	if !has[EnvPodName] {
		add = append(add, corev1.EnvVar{Name: EnvPodName, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}})
	}
	if !has[EnvPodNamespace] {
		add = append(add, corev1.EnvVar{Name: EnvPodNamespace, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}})
	}
	if !has[bootstrap.EnvConfig] && !has[bootstrap.EnvFile] {
		add = append(add, corev1.EnvVar{Name: bootstrap.EnvConfig, Value: bootstrapJSON})
	}
	return add
}
