// Package kubernetes_test checks the install, `kubectl apply -k
// deploy/kubernetes`, against the code it runs: it renders the
// kustomization as kubectl does (kustomize's krusty), decodes every object
// strictly into its Go type, parses the Deployment's arguments with the
// real `gmesh controlplane` command, runs the real control plane on a fake
// API server and checks every call it makes against the rendered RBAC, and
// checks that the webhook configurations call the Service, port and paths
// the webhooks serve.
package kubernetes_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/klog/v2"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/cli"
	"github.com/gmesh-dev/gmesh/internal/k8s/controller"
	"github.com/gmesh-dev/gmesh/internal/k8s/identity"
	"github.com/gmesh-dev/gmesh/internal/k8s/k8sfake"
	"github.com/gmesh-dev/gmesh/internal/k8s/rolloutctl"
	"github.com/gmesh-dev/gmesh/internal/k8s/rollouts"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
)

const ns = "gmesh-system"

// install is the rendered kustomization, each object decoded.
type install struct {
	crds        []*apiextensionsv1.CustomResourceDefinition
	namespace   *corev1.Namespace
	sa          *corev1.ServiceAccount
	clusterRole *rbacv1.ClusterRole
	crb         *rbacv1.ClusterRoleBinding
	role        *rbacv1.Role
	rb          *rbacv1.RoleBinding
	deployment  *appsv1.Deployment
	pdb         *policyv1.PodDisruptionBudget
	service     *corev1.Service
	mutating    *admissionregistrationv1.MutatingWebhookConfiguration
	validating  *admissionregistrationv1.ValidatingWebhookConfiguration
}

// render runs kustomize on this directory, as `kubectl apply -k` does,
// and decodes every object strictly: an unknown or duplicated field is an
// error naming the object.
func render(t *testing.T) *install {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), ".")
	if err != nil {
		t.Fatalf("kustomize build deploy/kubernetes: %v", err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	dec := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme, kjson.SerializerOptions{Strict: true})
	in := &install{}
	for _, r := range rm.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		id := r.GetKind() + " " + r.GetName()
		obj, _, err := dec.Decode(b, nil, nil)
		if err != nil {
			t.Errorf("%s: %v", id, err)
			continue
		}
		if mo, ok := obj.(metav1.Object); ok {
			namespaced := true
			switch obj.(type) {
			case *apiextensionsv1.CustomResourceDefinition, *corev1.Namespace, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding,
				*admissionregistrationv1.MutatingWebhookConfiguration, *admissionregistrationv1.ValidatingWebhookConfiguration:
				namespaced = false
			}
			if namespaced && mo.GetNamespace() != ns {
				t.Errorf("%s: namespace %q, want %q", id, mo.GetNamespace(), ns)
			}
		}
		dup := func(set bool) {
			if set {
				t.Errorf("%s: a second object of its kind", id)
			}
		}
		switch o := obj.(type) {
		case *apiextensionsv1.CustomResourceDefinition:
			in.crds = append(in.crds, o)
		case *corev1.Namespace:
			dup(in.namespace != nil)
			in.namespace = o
		case *corev1.ServiceAccount:
			dup(in.sa != nil)
			in.sa = o
		case *rbacv1.ClusterRole:
			dup(in.clusterRole != nil)
			in.clusterRole = o
		case *rbacv1.ClusterRoleBinding:
			dup(in.crb != nil)
			in.crb = o
		case *rbacv1.Role:
			dup(in.role != nil)
			in.role = o
		case *rbacv1.RoleBinding:
			dup(in.rb != nil)
			in.rb = o
		case *appsv1.Deployment:
			dup(in.deployment != nil)
			in.deployment = o
		case *policyv1.PodDisruptionBudget:
			dup(in.pdb != nil)
			in.pdb = o
		case *corev1.Service:
			dup(in.service != nil)
			in.service = o
		case *admissionregistrationv1.MutatingWebhookConfiguration:
			dup(in.mutating != nil)
			in.mutating = o
		case *admissionregistrationv1.ValidatingWebhookConfiguration:
			dup(in.validating != nil)
			in.validating = o
		default:
			t.Errorf("%s: an object the install should not have (%T)", id, obj)
		}
	}
	for what, missing := range map[string]bool{
		"Namespace": in.namespace == nil, "ServiceAccount": in.sa == nil, "ClusterRole": in.clusterRole == nil,
		"ClusterRoleBinding": in.crb == nil, "Role": in.role == nil, "RoleBinding": in.rb == nil, "Deployment": in.deployment == nil,
		"PodDisruptionBudget": in.pdb == nil, "Service": in.service == nil, "MutatingWebhookConfiguration": in.mutating == nil,
		"ValidatingWebhookConfiguration": in.validating == nil,
	} {
		if missing {
			t.Errorf("no %s in the install", what)
		}
	}
	appmeshCRDs := 0
	for _, crd := range in.crds {
		if crd.Spec.Group == "appmesh.k8s.aws" {
			appmeshCRDs++
		}
	}
	if appmeshCRDs != 6 || len(in.crds) != 7 {
		t.Errorf("got %d CRDs (%d of appmesh.k8s.aws), want App Mesh's 6 and gmesh's Rollout", len(in.crds), appmeshCRDs)
	}
	if t.Failed() {
		t.FailNow()
	}
	return in
}

// controlplaneArgs parses the Deployment's arguments with the real
// `gmesh controlplane` command and returns the flags' values.
func controlplaneArgs(t *testing.T, c corev1.Container) map[string]string {
	t.Helper()
	root := cli.New(cli.IO{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard})
	cmd, rest, err := root.Find(c.Args)
	if err != nil {
		t.Fatalf("args %q: %v", c.Args, err)
	}
	if cmd.Name() != "controlplane" {
		t.Fatalf("args %q run %q, want controlplane", c.Args, cmd.CommandPath())
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatalf("args %q: gmesh controlplane refuses them: %v", c.Args, err)
	}
	if err := cmd.ValidateArgs(cmd.Flags().Args()); err != nil {
		t.Fatalf("args %q: %v", c.Args, err)
	}
	out := map[string]string{}
	for _, name := range []string{"kubernetes", "addr", "health-addr", "webhook-addr", "webhook-service", "webhook-namespace", "webhook-secret", "lease-namespace", "identity", "xds-address", "leader-elect", "peer-namespace", "peer-selector", "peer-port"} {
		f := cmd.Flags().Lookup(name)
		if f == nil {
			t.Fatalf("gmesh controlplane has no flag --%s", name)
		}
		out[name] = f.Value.String()
	}
	if out["kubernetes"] != "true" {
		t.Errorf("args %q: without --kubernetes", c.Args)
	}
	return out
}

func port(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}

func containerPort(c corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}

func TestDeployment(t *testing.T) {
	in := render(t)
	d := in.deployment
	if d.Name != "gmesh-controlplane" || d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("deployment %s with %v replicas, want gmesh-controlplane with 2", d.Name, d.Spec.Replicas)
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(d.Spec.Template.Spec.Containers))
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != "gmesh.local/gmesh:dev" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s (%s), want gmesh.local/gmesh:dev (IfNotPresent)", c.Image, c.ImagePullPolicy)
	}
	flags := controlplaneArgs(t, c)
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if env["POD_NAME"] != "metadata.name" || env["POD_NAMESPACE"] != "metadata.namespace" {
		t.Errorf("env %v: want POD_NAME and POD_NAMESPACE from the downward API", env)
	}
	for _, f := range []string{"webhook-namespace", "lease-namespace"} {
		if v := flags[f]; v != "$(POD_NAMESPACE)" && v != ns {
			t.Errorf("--%s=%s, want the pod's namespace", f, v)
		}
	}
	if flags["webhook-service"] != in.service.Name {
		t.Errorf("--webhook-service=%s, but the Service is %s", flags["webhook-service"], in.service.Name)
	}
	if flags["webhook-secret"] != webhook.DefaultSecretName {
		t.Errorf("--webhook-secret=%s, but the Role grants %s", flags["webhook-secret"], webhook.DefaultSecretName)
	}
	if flags["leader-elect"] != "true" {
		t.Errorf("--leader-elect=%s: nothing would write status or make the certificates", flags["leader-elect"])
	}
	// The leader finds the other replicas (to ask whether their xDS
	// clients ACKed a router) by these labels in its namespace, on their
	// health port.
	if v := flags["peer-namespace"]; v != "" && v != "$(POD_NAMESPACE)" && v != ns {
		t.Errorf("--peer-namespace=%s, want the pod's namespace", v)
	}
	if sel, err := labels.Parse(flags["peer-selector"]); err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("--peer-selector=%s does not select the control plane's pods %v (%v)", flags["peer-selector"], d.Spec.Template.Labels, err)
	}
	if pp := flags["peer-port"]; pp != "0" && pp != strconv.Itoa(int(port(t, flags["health-addr"]))) {
		t.Errorf("--peer-port=%s, but the replicas serve %s on --health-addr=%s", pp, controller.PathConvergedRouter, flags["health-addr"])
	}
	if env["POD_NAME"] == "" || (flags["identity"] != "$(POD_NAME)" && flags["identity"] != "") {
		t.Errorf("--identity=%s: a replica must know its own pod (it answers for itself in-process)", flags["identity"])
	}
	// The Service's ports reach what the flags serve.
	svcPorts := map[string]corev1.ServicePort{}
	for _, p := range in.service.Spec.Ports {
		svcPorts[p.Name] = p
	}
	if p, ok := svcPorts["xds"]; !ok || p.Port != 18000 || containerPort(c, p.TargetPort) != port(t, flags["addr"]) {
		t.Errorf("service port xds %+v does not reach --addr=%s on 18000", p, flags["addr"])
	}
	if p, ok := svcPorts["webhook"]; !ok || p.Port != 443 || containerPort(c, p.TargetPort) != port(t, flags["webhook-addr"]) {
		t.Errorf("service port webhook %+v does not reach --webhook-addr=%s on 443", p, flags["webhook-addr"])
	}
	if sel := labels.SelectorFromSet(in.service.Spec.Selector); !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the Service's selector %v does not select the pods %v", in.service.Spec.Selector, d.Spec.Template.Labels)
	}
	for name, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[name]
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != want || containerPort(c, pr.HTTPGet.Port) != port(t, flags["health-addr"]) {
			t.Errorf("%s probe %+v, want GET %s on --health-addr=%s", name, pr, want, flags["health-addr"])
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}
	psc, sc := d.Spec.Template.Spec.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod security context %+v: want non-root with a numeric user (the image has none)", psc)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container security context %+v: want a read-only root file system and no privilege escalation", sc)
	}
	aff := d.Spec.Template.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 ||
		len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
		t.Errorf("anti-affinity %+v: want preferred only (a single-node cluster must run both replicas)", aff)
	}
	if d.Spec.Template.Spec.ServiceAccountName != in.sa.Name {
		t.Errorf("service account %q, want %q", d.Spec.Template.Spec.ServiceAccountName, in.sa.Name)
	}
	if in.pdb.Spec.MinAvailable == nil || in.pdb.Spec.MinAvailable.IntVal != 1 {
		t.Errorf("PodDisruptionBudget minAvailable %v, want 1", in.pdb.Spec.MinAvailable)
	}
	if sel, err := metav1.LabelSelectorAsSelector(in.pdb.Spec.Selector); err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the PodDisruptionBudget does not select the control plane's pods")
	}
	// The control plane's pods are never injected.
	if ok, _ := webhook.InjectionWanted(in.namespace.Labels, d.Spec.Template.Labels, d.Spec.Template.Annotations); ok {
		t.Errorf("the control plane's own pods would be injected")
	}
}

func TestWebhookConfigurations(t *testing.T) {
	in := render(t)
	c := in.deployment.Spec.Template.Spec.Containers[0]
	flags := controlplaneArgs(t, c)
	var webhookPort int32
	for _, p := range in.service.Spec.Ports {
		if containerPort(c, p.TargetPort) == port(t, flags["webhook-addr"]) {
			webhookPort = p.Port
		}
	}
	check := func(config, name string, cc admissionregistrationv1.WebhookClientConfig, path string, sideEffects *admissionregistrationv1.SideEffectClass, versions []string) {
		t.Helper()
		s := cc.Service
		if s == nil || s.Name != in.service.Name || s.Namespace != ns || s.Path == nil || *s.Path != path || s.Port == nil || *s.Port != webhookPort {
			t.Errorf("%s %s: clientConfig %+v, want service %s/%s port %d path %s", config, name, cc, ns, in.service.Name, webhookPort, path)
		}
		if cc.URL != nil || len(cc.CABundle) != 0 {
			t.Errorf("%s %s: a url or a caBundle (the control plane sets it)", config, name)
		}
		if sideEffects == nil || *sideEffects != admissionregistrationv1.SideEffectClassNone || !slices.Contains(versions, "v1") {
			t.Errorf("%s %s: want sideEffects None and admissionReviewVersions v1", config, name)
		}
	}
	if in.mutating.Name != webhook.MutatingConfigName || in.validating.Name != webhook.ValidatingConfigName {
		t.Errorf("configurations %s and %s, want %s and %s", in.mutating.Name, in.validating.Name, webhook.MutatingConfigName, webhook.ValidatingConfigName)
	}
	for _, w := range in.mutating.Webhooks {
		check(in.mutating.Name, w.Name, w.ClientConfig, webhook.PathInject, w.SideEffects, w.AdmissionReviewVersions)
		if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Resources, []string{"pods"}) || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) {
			t.Errorf("%s: rules %+v, want pods CREATE", w.Name, w.Rules)
		}
		if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
			t.Errorf("%s: reinvocationPolicy %v, want IfNeeded (containers other webhooks add get the env too)", w.Name, w.ReinvocationPolicy)
		}
	}
	// Which injector webhooks a namespace is sent to: exactly one where
	// the code injects, none elsewhere.
	for _, tc := range []struct {
		name   string
		labels map[string]string
	}{
		{"gmesh-system", in.namespace.Labels},
		{"kube-system", map[string]string{webhook.LabelInject: webhook.ValueEnabled}},
		{"echo", map[string]string{webhook.LabelInject: webhook.ValueEnabled}},
		{"legacy", map[string]string{webhook.LabelAppMeshInject: webhook.ValueEnabled}},
		{"both", map[string]string{webhook.LabelAppMeshInject: webhook.ValueEnabled, webhook.LabelInject: webhook.ValueEnabled}},
		{"off", map[string]string{webhook.LabelAppMeshInject: webhook.ValueEnabled, webhook.LabelInject: webhook.ValueDisabled}},
		{"plain", nil},
	} {
		nsLabels := labels.Set{"kubernetes.io/metadata.name": tc.name}
		for k, v := range tc.labels {
			nsLabels[k] = v
		}
		n := 0
		for _, w := range in.mutating.Webhooks {
			sel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
			if err != nil {
				t.Fatalf("%s: namespaceSelector: %v", w.Name, err)
			}
			if sel.Matches(nsLabels) {
				n++
			}
		}
		want := 0
		if ok, _ := webhook.InjectionWanted(tc.labels, nil, nil); ok && tc.name != "gmesh-system" && tc.name != "kube-system" {
			want = 1
		}
		if n != want {
			t.Errorf("namespace %s %v: sent to %d injector webhooks, want %d", tc.name, tc.labels, n, want)
		}
	}
	var crdResources []string
	var rolloutVersions []string
	for _, crd := range in.crds {
		switch crd.Spec.Group {
		case "appmesh.k8s.aws":
			crdResources = append(crdResources, crd.Spec.Names.Plural)
		case v1alpha1.GroupName:
			if crd.Spec.Names.Plural == rollouts.GVR.Resource {
				for _, v := range crd.Spec.Versions {
					if v.Served {
						rolloutVersions = append(rolloutVersions, v.Name)
					}
				}
			}
		}
	}
	slices.Sort(crdResources)
	if !slices.Equal(rolloutVersions, []string{rollouts.GVR.Version}) {
		t.Errorf("the Rollout CRD serves %v, want %s (what the validator decodes)", rolloutVersions, rollouts.GVR.Version)
	}
	ops := map[admissionregistrationv1.OperationType]admissionregistrationv1.FailurePolicyType{}
	rolloutRules := 0
	for _, w := range in.validating.Webhooks {
		check(in.validating.Name, w.Name, w.ClientConfig, webhook.PathValidate, w.SideEffects, w.AdmissionReviewVersions)
		for _, r := range w.Rules {
			if slices.Contains(r.APIGroups, v1alpha1.GroupName) {
				// Rollouts: creates and updates, never deletes or the
				// status, and a failure refuses.
				rolloutRules++
				if !slices.Equal(r.APIGroups, []string{v1alpha1.GroupName}) || !slices.Equal(r.APIVersions, rolloutVersions) ||
					!slices.Equal(r.Resources, []string{rollouts.GVR.Resource}) ||
					!slices.Equal(r.Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}) ||
					*w.FailurePolicy != admissionregistrationv1.Fail {
					t.Errorf("%s: rule %+v, failurePolicy %s; want rollouts of %s CREATE and UPDATE, Fail", w.Name, r, *w.FailurePolicy, rollouts.GVR.GroupVersion())
				}
				continue
			}
			res := slices.Clone(r.Resources)
			slices.Sort(res)
			if !slices.Equal(res, crdResources) || !slices.Equal(r.APIGroups, []string{"appmesh.k8s.aws"}) || !slices.Equal(r.APIVersions, []string{"v1beta2"}) {
				t.Errorf("%s: rule %+v, want the six App Mesh resources %v of appmesh.k8s.aws/v1beta2", w.Name, r, crdResources)
			}
			for _, op := range r.Operations {
				ops[op] = *w.FailurePolicy
			}
		}
	}
	want := map[admissionregistrationv1.OperationType]admissionregistrationv1.FailurePolicyType{
		admissionregistrationv1.Create: admissionregistrationv1.Fail, admissionregistrationv1.Update: admissionregistrationv1.Fail,
		admissionregistrationv1.Delete: admissionregistrationv1.Ignore,
	}
	if fmt.Sprint(ops) != fmt.Sprint(want) {
		t.Errorf("validated operations and their failure policies %v, want %v", ops, want)
	}
	if rolloutRules != 1 {
		t.Errorf("%d rules send Rollouts to the validator, want 1", rolloutRules)
	}
}

// call is one request the control plane made.
type call struct {
	verb, group, resource, namespace, name string
}

func (c call) String() string {
	return fmt.Sprintf("%s %s/%s ns=%q name=%q", c.verb, c.group, c.resource, c.namespace, c.name)
}

func calls(actions []k8stesting.Action) []call {
	var out []call
	for _, a := range actions {
		c := call{verb: a.GetVerb(), group: a.GetResource().Group, resource: a.GetResource().Resource, namespace: a.GetNamespace()}
		if a.GetSubresource() != "" {
			c.resource += "/" + a.GetSubresource()
		}
		switch x := a.(type) {
		case k8stesting.GetAction:
			c.name = x.GetName()
		case k8stesting.UpdateAction:
			c.name = x.GetObject().(metav1.Object).GetName()
		case k8stesting.CreateAction:
			// create is authorised without a name
		case k8stesting.PatchAction:
			c.name = x.GetName()
		case k8stesting.DeleteAction:
			c.name = x.GetName()
		case k8stesting.ListAction:
			if v, ok := x.GetListRestrictions().Fields.RequiresExactMatch("metadata.name"); ok {
				c.name = v
			}
		case k8stesting.WatchAction:
			if v, ok := x.GetWatchRestrictions().Fields.RequiresExactMatch("metadata.name"); ok {
				c.name = v
			}
		}
		out = append(out, c)
	}
	return out
}

// allows reports whether rules allow c (RBAC's matching: group, resource
// with subresource, verb, and resourceNames when the rule has them).
func allows(rules []rbacv1.PolicyRule, c call) (int, bool) {
	for i, r := range rules {
		if slices.Contains(r.APIGroups, c.group) && slices.Contains(r.Resources, c.resource) && slices.Contains(r.Verbs, c.verb) &&
			(len(r.ResourceNames) == 0 || (c.name != "" && slices.Contains(r.ResourceNames, c.name))) {
			return i, true
		}
	}
	return -1, false
}

// TestRBACCoversTheControlPlanesCalls runs the real control plane (every
// part: informers, the leader's status writer and certificates, the
// injector and the validator) on fake clientsets and checks each request
// it makes against the rendered ClusterRole and Role, and that every rule
// is used.
func TestRBACCoversTheControlPlanesCalls(t *testing.T) {
	in := render(t)
	for _, sub := range append(in.crb.Subjects, in.rb.Subjects...) {
		if sub.Kind != "ServiceAccount" || sub.Name != in.sa.Name || sub.Namespace != ns {
			t.Errorf("binding subject %+v, want ServiceAccount %s/%s", sub, ns, in.sa.Name)
		}
	}
	if in.crb.RoleRef.Name != in.clusterRole.Name || in.rb.RoleRef.Name != in.role.Name || in.rb.Namespace != ns {
		t.Errorf("bindings do not bind the roles")
	}

	// client-go's leader election logs through klog.
	klog.SetSlogLogger(slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	core := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "echo", Labels: map[string]string{"mesh": "echo", webhook.LabelInject: webhook.ValueEnabled}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		in.service.DeepCopy(), in.mutating.DeepCopy(), in.validating.DeepCopy(),
	}
	core = append(core, rolloutDeployment(t))
	// A mesh with TLS on, with a pod: the leader keeps its node's identity
	// Secret.
	core = append(core,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sec", Labels: map[string]string{"mesh": "secure"}}},
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "sec", Name: "server-1", Labels: map[string]string{"app": "server"}},
			Spec:   corev1.PodSpec{ServiceAccountName: "server"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.1.1"}})
	kube := kubefake.NewClientset(core...)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), k8sfake.ListKinds())
	// The API server's resourceVersions and generations, which the rollout
	// runtime's writes depend on.
	k8sfake.APIServer(kube, dyn, controller.GVRVirtualRouters, controller.GVRVirtualNodes, rollouts.GVR, gvrDeployments)
	for _, obj := range append(append(echoMesh(t), objectsOf(t, secureMeshYAML)...), rolloutObjects(t)...) {
		gvr := rollouts.GVR
		if obj.GetKind() != "Rollout" {
			gvr = gvrOf(t, obj.GetKind())
		}
		if err := dyn.Tracker().Create(gvr, obj, obj.GetNamespace()); err != nil {
			t.Fatal(err)
		}
	}
	// As gmesh controlplane --kubernetes does: the mesh CA first.
	ca, err := identity.LoadOrCreateCA(ctx, kube, ns, identity.DefaultCASecret, nil)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controller.New(controller.Config{
		Identities: &controller.IdentitiesConfig{CA: ca},
		XDSAuth:    &controller.XDSAuthConfig{CA: ca},
		Kube:       kube, Dynamic: dyn, XDSAddr: "127.0.0.1:0",
		Status: &controller.StatusConfig{Namespace: ns, Identity: "replica-0",
			LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond},
		Webhook: &webhook.Options{Addr: "127.0.0.1:0", Namespace: ns, Service: in.service.Name, SecretName: webhook.DefaultSecretName, Settle: -1},
		Peers:   &controller.PeersConfig{Namespace: ns},
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	// The rollout runtime, with xDS clients that never ACK: the rollout
	// pauses itself (mirrored into spec.paused), then is aborted.
	if _, err := rolloutctl.Attach(cp, kube, dyn, neverACKed{}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	kubeletDone := make(chan struct{})
	go func() { defer close(kubeletDone); kubelet(runCtx, t, kube) }()
	defer func() { stop(); <-kubeletDone }()
	done := make(chan error, 1)
	go func() { done <- cp.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	poll(ctx, t, "status written and caBundle set", func() bool {
		v, err := kube.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(ctx, in.validating.Name, metav1.GetOptions{})
		return err == nil && len(v.Webhooks[0].ClientConfig.CABundle) > 0 && cp.Status().Writes() > 0 && cp.Webhooks().Ready()
	})
	// A Secret spoilt behind the control plane's back (through the
	// tracker: the test's own calls are not the control plane's) is
	// renewed by the leader.
	spoilt, err := kube.CoreV1().Secrets(ns).Get(ctx, webhook.DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spoilt = spoilt.DeepCopy()
	spoilt.Data = map[string][]byte{webhook.KeyTLSCert: []byte("not a certificate")}
	if err := kube.Tracker().Update(corev1.SchemeGroupVersion.WithResource("secrets"), spoilt, ns); err != nil {
		t.Fatal(err)
	}
	var sec *corev1.Secret
	poll(ctx, t, "secret renewed", func() bool {
		sec, err = kube.CoreV1().Secrets(ns).Get(ctx, webhook.DefaultSecretName, metav1.GetOptions{})
		return err == nil && len(sec.Data[webhook.KeyCACert]) > 0
	})
	// The leader's convergence across replicas reads the pod informer:
	// no call of its own.
	cp.Cluster().ConvergedRouter("echo", "echo-server", 1)
	// The injector: a pod of a labelled namespace (the Service's
	// ClusterIP) and one of a namespace not in the cache (a GET).
	client := httpsClient(t, sec.Data[webhook.KeyCACert], in.service.Name+"."+ns+".svc")
	for _, podNS := range []string{"echo", "new"} {
		raw, _ := encodeJSON(&corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}})
		post(ctx, t, client, "https://"+cp.WebhookAddr()+webhook.PathInject, &admissionv1.AdmissionRequest{
			UID: "1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: podNS, Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
		})
	}

	// The validator: a Rollout's create GETs its stable Deployment and
	// LISTs the namespace's Rollouts.
	ro := []byte(`{"apiVersion":"gmesh.dev/v1alpha1","kind":"Rollout","metadata":{"name":"echo-server","namespace":"echo"},` +
		`"spec":{"virtualRouterRef":{"name":"echo-server"},"stableDeployment":"echo-server-0-9","version":"1.0","images":[{"container":"echo-server","image":"echo-server:1.0"}]}}`)
	resp := post(ctx, t, client, "https://"+cp.WebhookAddr()+webhook.PathValidate, &admissionv1.AdmissionRequest{
		UID: "2", Kind: metav1.GroupVersionKind{Group: v1alpha1.GroupName, Version: "v1alpha1", Kind: "Rollout"},
		Resource:  metav1.GroupVersionResource{Group: v1alpha1.GroupName, Version: "v1alpha1", Resource: "rollouts"},
		Namespace: "echo", Name: "echo-server", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: ro},
	})
	if resp.Allowed || !strings.Contains(resp.Result.Message, `deployment "echo-server-0-9" not found`) {
		t.Errorf("a Rollout of a Deployment that is not there: allowed %v, %+v; want refused", resp.Allowed, resp.Result)
	}

	poll(ctx, t, "the rollout paused itself, mirrored into spec.paused", func() bool {
		ro := getRollout(t, dyn)
		return ro.Status.Phase == "Paused" && ro.Spec.Paused
	})
	abortRollout(t, dyn)
	poll(ctx, t, "the rollout aborted", func() bool { return getRollout(t, dyn).Status.Phase == "Aborted" })

	// Identities: the node's Secret made, a key added for a second
	// service account, the Secret deleted with its node (through the
	// trackers: the test's own calls are not the control plane's).
	secrets := kube.CoreV1().Secrets("sec")
	hasKeys := func(keys ...string) func() bool {
		return func() bool {
			s, err := secrets.Get(ctx, identity.SecretName("server"), metav1.GetOptions{})
			if err != nil {
				return false
			}
			for _, k := range keys {
				if len(s.Data[k]) == 0 {
					return false
				}
			}
			return len(s.Data) == len(keys)
		}
	}
	poll(ctx, t, "the node's identity Secret", hasKeys(identity.BundleKey, identity.KeyFor("server")))
	second := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "sec", Name: "server-2", Labels: map[string]string{"app": "server"}},
		Spec: corev1.PodSpec{ServiceAccountName: "other"}, Status: corev1.PodStatus{Phase: corev1.PodPending}}
	if err := kube.Tracker().Add(second); err != nil {
		t.Fatal(err)
	}
	poll(ctx, t, "a key for the second service account", hasKeys(identity.BundleKey, identity.KeyFor("server"), identity.KeyFor("other")))
	if err := dyn.Tracker().Delete(controller.GVRVirtualNodes, "sec", "server"); err != nil {
		t.Fatal(err)
	}
	poll(ctx, t, "the identity Secret deleted with its node", func() bool {
		_, err := secrets.Get(ctx, identity.SecretName("server"), metav1.GetOptions{})
		return err != nil
	})

	used := map[string]bool{}
	seen := map[call]bool{}
	for _, c := range calls(append(kube.Actions(), dyn.Actions()...)) {
		if seen[c] {
			continue
		}
		seen[c] = true
		rules, where := in.clusterRole.Rules, "ClusterRole"
		if c.namespace == ns {
			// In its own namespace the Role adds to the ClusterRole.
			if i, ok := allows(in.role.Rules, c); ok {
				used[fmt.Sprintf("Role rule %d verb %s", i, c.verb)] = true
				continue
			}
		}
		i, ok := allows(rules, c)
		if !ok {
			t.Errorf("RBAC does not allow the control plane's call %s", c)
			continue
		}
		used[fmt.Sprintf("%s rule %d verb %s", where, i, c.verb)] = true
	}
	for what, rules := range map[string][]rbacv1.PolicyRule{"ClusterRole": in.clusterRole.Rules, "Role": in.role.Rules} {
		for i, r := range rules {
			for _, v := range r.Verbs {
				if !used[fmt.Sprintf("%s rule %d verb %s", what, i, v)] {
					t.Errorf("%s rule %d (%v on %v %v) grants %s, which the control plane never used", what, i, r.APIGroups, r.Resources, r.ResourceNames, v)
				}
			}
		}
	}
	if t.Failed() {
		var all []string
		for c := range seen {
			all = append(all, c.String())
		}
		slices.Sort(all)
		t.Logf("the control plane's calls:\n%s", strings.Join(all, "\n"))
	}
}
