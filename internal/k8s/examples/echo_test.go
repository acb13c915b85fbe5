package examples_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/gmesh-dev/gmesh/internal/gateway"
	"github.com/gmesh-dev/gmesh/internal/k8s/appmesh"
	"github.com/gmesh-dev/gmesh/internal/k8s/gatewaypod"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// repoRoot is the module's root, from this package's directory.
const repoRoot = "../../.."

// rendered is an example as `kubectl apply -k` sends it.
type rendered struct {
	yaml        []byte
	deployments []appsv1.Deployment
	objects     map[string][]byte // "Kind namespace/name" -> YAML
	appmesh     []string          // the App Mesh objects' YAML
}

func render(t *testing.T, dir string) rendered {
	t.Helper()
	// As kubectl apply -k (k8s.io/cli-runtime) does: its legacy order
	// unless the kustomization sets sortOptions.
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionLegacy
	k := krusty.MakeKustomizer(opts)
	rm, err := k.Run(filesys.MakeFsOnDisk(), filepath.Join(repoRoot, dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	all, err := rm.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out := rendered{yaml: all, objects: map[string][]byte{}}
	for _, res := range rm.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			t.Fatalf("%s %s: %v", res.GetKind(), res.GetName(), err)
		}
		key := res.GetKind() + " " + res.GetNamespace() + "/" + res.GetName()
		if res.GetNamespace() == "" {
			key = res.GetKind() + " " + res.GetName()
		}
		out.objects[key] = y
		if strings.HasPrefix(res.GetApiVersion(), "appmesh.k8s.aws/") {
			out.appmesh = append(out.appmesh, string(y))
		}
		if res.GetKind() == "Deployment" {
			var d appsv1.Deployment
			if err := yaml.UnmarshalStrict(y, &d); err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			out.deployments = append(out.deployments, d)
		}
	}
	return out
}

// object decodes one rendered object strictly into out.
func (r rendered) object(t *testing.T, key string, out any) {
	t.Helper()
	y, ok := r.objects[key]
	if !ok {
		t.Fatalf("the example has no %s", key)
	}
	if err := yaml.UnmarshalStrict(y, out); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
}

// TestEchoExample renders examples/kubernetes/echo, decodes its App Mesh
// objects strictly, gives each Deployment one Ready pod, and converts the
// lot as the control plane does: nothing is refused, the xDS names are the
// documented ones, echo-client dials echo-server's virtual service, the
// gateway pods name a virtual gateway that routes to echo-client, and the
// mesh translates whole.
func TestEchoExample(t *testing.T) {
	ex := render(t, "examples/kubernetes/echo")
	var in appmesh.Input
	if err := appmesh.Decode("examples/kubernetes/echo", ex.yaml, &in); err != nil {
		t.Fatalf("strict decode: %v", err)
	}

	var ns corev1.Namespace
	ex.object(t, "Namespace echo", &ns)
	for k, v := range map[string]string{"gmesh.dev/inject": "enabled", "mesh": "echo"} {
		if got := ns.Labels[k]; got != v {
			t.Errorf("namespace echo: label %s = %q, want %q", k, got, v)
		}
	}

	// One Ready pod per Deployment, as the control plane's Source sees it.
	in.ReadyPodIPs = map[types.NamespacedName][]string{}
	for i := range in.VirtualNodes {
		vn := &in.VirtualNodes[i]
		sel, err := metav1.LabelSelectorAsSelector(vn.Spec.PodSelector)
		if err != nil {
			t.Fatalf("virtual node %s: podSelector: %v", vn.Name, err)
		}
		for j, d := range ex.deployments {
			if d.Namespace == vn.Namespace && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				key := types.NamespacedName{Namespace: vn.Namespace, Name: vn.Name}
				in.ReadyPodIPs[key] = append(in.ReadyPodIPs[key], fmt.Sprintf("10.244.0.%d", 2+j))
			}
		}
	}
	results := appmesh.Convert(in)
	for _, fe := range results.Errors() {
		t.Errorf("refused: %v", fe)
	}

	wantNames := []struct {
		kind       mesh.Kind
		name, want string
	}{
		{mesh.KindMesh, "echo", "echo"},
		{mesh.KindVirtualNode, "echo-server-0-9", "echo-server-0-9.echo"},
		{mesh.KindVirtualNode, "echo-client-0-1", "echo-client-0-1.echo"},
		{mesh.KindVirtualRouter, "echo-server", "echo-server.echo"},
		{mesh.KindVirtualRouter, "echo-client", "echo-client.echo"},
		{mesh.KindVirtualService, "echo-server", "echo-server.echo.svc.cluster.local"},
		{mesh.KindVirtualService, "echo-client", "echo-client.echo"},
		{mesh.KindVirtualGateway, "echo-gateway", "echo-gateway.echo"},
		{mesh.KindGatewayRoute, "echo-gateway-route", "echo-gateway-route.echo"},
	}
	if got, want := len(results), len(wantNames); got != want {
		t.Errorf("got %d App Mesh objects, want %d", got, want)
	}
	for _, w := range wantNames {
		ns := "echo"
		if w.kind == mesh.KindMesh {
			ns = ""
		}
		r := results.Find(w.kind, ns, w.name)
		if r == nil {
			t.Errorf("the example has no %s %s", w.kind, w.name)
			continue
		}
		if r.Mesh != "echo" || r.Name != w.want {
			t.Errorf("%s: got mesh %q, name %q, want mesh echo, name %q", r.Object, r.Mesh, r.Name, w.want)
		}
	}
	if gr := results.Find(mesh.KindGatewayRoute, "echo", "echo-gateway-route"); gr != nil && gr.VirtualGateway != "echo-gateway.echo" {
		t.Errorf("gateway route echo-gateway-route: got virtual gateway %q, want echo-gateway.echo", gr.VirtualGateway)
	}
	for _, vn := range []string{"echo-server-0-9", "echo-client-0-1"} {
		if r := results.Find(mesh.KindVirtualNode, "echo", vn); r != nil && len(r.Endpoints) != 1 {
			t.Errorf("virtual node %s: got %d endpoints, want 1 (its Deployment's Ready pod)", vn, len(r.Endpoints))
		}
	}

	// echo-client dials echo-server's virtual service by its xDS name.
	server := results.Find(mesh.KindVirtualService, "echo", "echo-server")
	if server == nil {
		t.Fatal("no virtual service echo-server")
	}
	var client appsv1.Deployment
	ex.object(t, "Deployment echo/echo-client-0-1", &client)
	if got, want := containerEnv(client, "ECHO_HOST"), "xds:///"+server.Name; got != want {
		t.Errorf("echo-client's ECHO_HOST = %q, want %q (xds:/// and virtual service echo-server's xDS name)", got, want)
	}

	// The gateway pods serve a virtual gateway of the example, which routes
	// to echo-client's node.
	var gw appsv1.Deployment
	ex.object(t, "Deployment echo/echo-gateway", &gw)
	args := gw.Spec.Template.Spec.Containers[0].Args
	i := slices.Index(args, "--virtual-gateway")
	if len(args) < 2 || args[0] != "gateway" || !slices.Contains(args, "--kubernetes") || i < 0 || i+1 >= len(args) {
		t.Fatalf("gateway args %q, want gateway --kubernetes --virtual-gateway NS/NAME", args)
	}
	vgName, err := gatewaypod.ParseVirtualGateway(args[i+1])
	if err != nil {
		t.Fatal(err)
	}
	vg := results.Find(mesh.KindVirtualGateway, vgName.Namespace, vgName.Name)
	if vg == nil {
		t.Fatalf("the gateway serves virtual gateway %s, which the example does not have", vgName)
	}
	st := mesh.NewState()
	for _, r := range results.Resources() {
		st.Put(r)
	}
	rt, _, errs := gateway.RoutesFromMesh(st, vg.Mesh, vg.Name, results.Endpoints())
	if len(errs) > 0 {
		t.Errorf("gateway routes: %v", errs)
	}
	if got := len(rt.Nodes["echo-client-0-1.echo"]); got != 1 {
		t.Errorf("the gateway has %d backends for echo-client-0-1.echo, want 1: %+v", got, rt.Nodes)
	}

	// The mesh translates whole, with echo-server's listener under the name
	// echo-client dials.
	resources := results.Resources()
	mesh.SortResources(resources)
	res, err := xds.Translate(xds.Input{Revision: 1, Resources: resources, Endpoints: results.Endpoints()})
	if err != nil {
		t.Fatalf("translate: %v", err)
	}
	found := false
	for _, l := range res.Listeners {
		found = found || l.GetName() == server.Name
	}
	if !found {
		t.Errorf("no xDS listener %s", server.Name)
	}
}

func containerEnv(d appsv1.Deployment, name string) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == name {
				return e.Value
			}
		}
	}
	return ""
}

// TestEchoExamplePods: every container uses one of the images `make images`
// builds, with imagePullPolicy IfNotPresent (images are loaded, not
// pulled); the gateway runs as a service account bound to a read-only role
// over what it watches.
func TestEchoExamplePods(t *testing.T) {
	ex := render(t, "examples/kubernetes/echo")
	makefile, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	var built []string
	for _, m := range regexp.MustCompile(`-ref (\S+)`).FindAllStringSubmatch(string(makefile), -1) {
		built = append(built, m[1])
	}
	if len(ex.deployments) != 3 {
		t.Errorf("got %d Deployments, want 3 (echo-server, echo-client, the gateway)", len(ex.deployments))
	}
	for _, d := range ex.deployments {
		if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
			t.Errorf("Deployment %s: replicas %v, want 2", d.Name, d.Spec.Replicas)
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if !slices.Contains(built, c.Image) {
				t.Errorf("Deployment %s: image %s is none of the Makefile's images %v", d.Name, c.Image, built)
			}
			if c.ImagePullPolicy != corev1.PullIfNotPresent {
				t.Errorf("Deployment %s: imagePullPolicy %q, want IfNotPresent", d.Name, c.ImagePullPolicy)
			}
			if c.ReadinessProbe == nil {
				t.Errorf("Deployment %s: no readinessProbe: a pod serves (is in EDS) while it is Ready", d.Name)
			}
		}
	}

	var gw appsv1.Deployment
	ex.object(t, "Deployment echo/echo-gateway", &gw)
	var binding rbacv1.ClusterRoleBinding
	ex.object(t, "ClusterRoleBinding gmesh-gateway-echo", &binding)
	sa := gw.Spec.Template.Spec.ServiceAccountName
	if len(binding.Subjects) != 1 || binding.Subjects[0].Kind != "ServiceAccount" || binding.Subjects[0].Name != sa || binding.Subjects[0].Namespace != gw.Namespace {
		t.Errorf("ClusterRoleBinding subjects %+v, want the gateway's service account %s/%s", binding.Subjects, gw.Namespace, sa)
	}
	var role rbacv1.ClusterRole
	ex.object(t, "ClusterRole "+binding.RoleRef.Name, &role)
	granted := map[string]bool{}
	for _, rule := range role.Rules {
		for _, v := range rule.Verbs {
			if v != "get" && v != "list" && v != "watch" {
				t.Errorf("ClusterRole %s grants %q on %v, want read-only (get, list, watch)", role.Name, v, rule.Resources)
			}
		}
		for _, g := range rule.APIGroups {
			for _, r := range rule.Resources {
				granted[strings.TrimPrefix(g+"/"+r, "/")] = len(rule.Verbs) == 3
			}
		}
	}
	for _, r := range []string{"appmesh.k8s.aws/meshes", "appmesh.k8s.aws/virtualnodes", "appmesh.k8s.aws/virtualrouters",
		"appmesh.k8s.aws/virtualservices", "appmesh.k8s.aws/virtualgateways", "appmesh.k8s.aws/gatewayroutes", "pods", "namespaces"} {
		if !granted[r] {
			t.Errorf("ClusterRole %s does not grant get, list and watch on %s", role.Name, r)
		}
	}
}

// TestEchoMTLSExample renders examples/kubernetes/echo-mtls and converts
// it as the control plane does: nothing is refused, echo-server's node is
// STRICT and the mesh has TLS on, echo-client enforces TLS to its
// backends, and the translation gives echo-server's pod a server listener
// whose policy admits echo-client's pods only; echo-server's Deployment
// listens on the pod's IP and is Ready by /readyz on its metrics port.
func TestEchoMTLSExample(t *testing.T) {
	ex := render(t, "examples/kubernetes/echo-mtls")
	var in appmesh.Input
	if err := appmesh.Decode("examples/kubernetes/echo-mtls", ex.yaml, &in); err != nil {
		t.Fatalf("strict decode: %v", err)
	}
	in.ReadyPodIPs = map[types.NamespacedName][]string{
		{Namespace: "echo", Name: "echo-server-0-9"}: {"10.244.0.2"},
		{Namespace: "echo", Name: "echo-client-0-1"}: {"10.244.0.3"},
	}
	results := appmesh.Convert(in)
	for _, fe := range results.Errors() {
		t.Errorf("refused: %v", fe)
	}
	resources := results.Resources()
	server := results.Find(mesh.KindVirtualNode, "echo", "echo-server-0-9")
	client := results.Find(mesh.KindVirtualNode, "echo", "echo-client-0-1")
	if server == nil || client == nil {
		t.Fatal("the example lacks echo-server-0-9 or echo-client-0-1")
	}
	if !mesh.MeshTLS(resources, "echo") {
		t.Error("mesh echo has TLS off, want on")
	}
	for _, r := range resources {
		switch {
		case r.Kind == mesh.KindVirtualNode && r.Metadata.Name == server.Name:
			if got := r.VirtualNode().TLSMode(); got != mesh.TLSStrict {
				t.Errorf("echo-server's listener tls mode %q, want STRICT", got)
			}
		case r.Kind == mesh.KindVirtualNode && r.Metadata.Name == client.Name:
			if p := r.VirtualNode().BackendTLS("echo-server.echo.svc.cluster.local"); !p.Enforced() {
				t.Errorf("echo-client's client policy to echo-server %+v, want TLS enforced", p)
			}
		}
	}
	mesh.SortResources(resources)
	res, err := xds.Translate(xds.Input{Revision: 1, Resources: resources, Endpoints: results.Endpoints()})
	if err != nil {
		t.Fatalf("translate: %v", err)
	}
	var serverListener string
	for _, l := range res.Listeners {
		if strings.Contains(l.GetName(), "10.244.0.2:50051") {
			serverListener = l.String()
		}
	}
	if serverListener == "" {
		t.Fatal("no server listener for echo-server's pod 10.244.0.2:50051")
	}
	if !strings.Contains(serverListener, "echo-client-0-1") || strings.Contains(serverListener, "vn/echo-server-0-9") {
		t.Errorf("echo-server's server listener's policy does not admit just echo-client-0-1: %s", serverListener)
	}

	var d appsv1.Deployment
	ex.object(t, "Deployment echo/echo-server-0-9", &d)
	c := d.Spec.Template.Spec.Containers[0]
	var host *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "HOST" {
			host = &c.Env[i]
		}
	}
	if host == nil || host.ValueFrom == nil || host.ValueFrom.FieldRef == nil || host.ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Errorf("echo-server's HOST %+v, want the pod's IP from the downward API", host)
	}
	p := c.ReadinessProbe
	if p == nil || p.GRPC != nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.String() != "metrics" {
		t.Errorf("echo-server's readiness probe %+v, want only httpGet /readyz on port metrics", p)
	}
}
