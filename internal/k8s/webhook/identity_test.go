package webhook_test

import (
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/gmesh-dev/gmesh/internal/k8s/identity"
	"github.com/gmesh-dev/gmesh/internal/k8s/webhook"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

// fakeIdentities answers PodIdentity from a table of label app=... to a
// VirtualNode, and records what it was asked.
type fakeIdentities struct {
	byApp map[string]identity.Want
	err   error

	mu    sync.Mutex
	asked []string // namespace/app
}

var _ webhook.PodIdentities = (*fakeIdentities)(nil)

func (f *fakeIdentities) PodIdentity(namespace string, podLabels map[string]string) (identity.Want, bool, error) {
	f.mu.Lock()
	f.asked = append(f.asked, namespace+"/"+podLabels["app"])
	f.mu.Unlock()
	if f.err != nil {
		return identity.Want{}, false, f.err
	}
	w, ok := f.byApp[podLabels["app"]]
	return w, ok, nil
}

func (f *fakeIdentities) lastAsked() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.asked) == 0 {
		return ""
	}
	return f.asked[len(f.asked)-1]
}

// tlsPod is testPod labelled app=app, running as serviceAccount.
func tlsPod(app, serviceAccount string) *corev1.Pod {
	p := testPod("echo")
	p.Labels = map[string]string{"app": app}
	p.Spec.ServiceAccountName = serviceAccount
	return p
}

// injectedBootstrap is what a container's injected bootstrap says of TLS.
type injectedBootstrap struct {
	XDSServers []struct {
		ServerURI    string `json:"server_uri"`
		ChannelCreds []struct {
			Type string `json:"type"`
		} `json:"channel_creds"`
	} `json:"xds_servers"`
	Node struct {
		ID string `json:"id"`
	} `json:"node"`
	CertificateProviders map[string]struct {
		PluginName string            `json:"plugin_name"`
		Config     map[string]string `json:"config"`
	} `json:"certificate_providers"`
	ServerListenerResourceNameTemplate string `json:"server_listener_resource_name_template"`
}

func bootstrapOf(t testing.TB, c corev1.Container) injectedBootstrap {
	t.Helper()
	e, ok := envOf(c)[bootstrap.EnvConfig]
	if !ok {
		t.Fatalf("container %s: no %s", c.Name, bootstrap.EnvConfig)
	}
	var b injectedBootstrap
	if err := json.Unmarshal([]byte(e.Value), &b); err != nil {
		t.Fatalf("container %s: %s: %v", c.Name, bootstrap.EnvConfig, err)
	}
	return b
}

// checkIdentity checks that pod has the identity volume of secret with
// serviceAccount's key, once, and that every container mounts it once,
// read-only, at identity.MountPath.
func checkIdentity(t testing.TB, pod *corev1.Pod, secret, serviceAccount string) {
	t.Helper()
	var vols []corev1.Volume
	for _, v := range pod.Spec.Volumes {
		if v.Name == identity.VolumeName {
			vols = append(vols, v)
		}
	}
	if len(vols) != 1 {
		t.Fatalf("pod has %d volumes named %s, want 1: %+v", len(vols), identity.VolumeName, pod.Spec.Volumes)
	}
	mode := int32(0o400)
	want := corev1.Volume{Name: identity.VolumeName, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: secret,
		Items: []corev1.KeyToPath{
			{Key: identity.KeyFor(serviceAccount), Path: identity.IdentityFile, Mode: &mode},
			{Key: identity.BundleKey, Path: identity.BundleFile},
		},
	}}}
	if diff := cmp.Diff(want, vols[0]); diff != "" {
		t.Errorf("identity volume (-want +got):\n%s", diff)
	}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		var mounts []corev1.VolumeMount
		for _, m := range c.VolumeMounts {
			if m.Name == identity.VolumeName || m.MountPath == identity.MountPath {
				mounts = append(mounts, m)
			}
		}
		wantMount := []corev1.VolumeMount{{Name: identity.VolumeName, MountPath: identity.MountPath, ReadOnly: true}}
		if diff := cmp.Diff(wantMount, mounts); diff != "" {
			t.Errorf("container %s: identity mounts (-want +got):\n%s", c.Name, diff)
		}
	}
}

// checkTLSBootstrap checks that c's bootstrap names the mounted files,
// refreshed every refresh, with the server listener template, and the xDS
// channel's credentials.
func checkTLSBootstrap(t testing.TB, c corev1.Container, refresh, channelCreds string) {
	t.Helper()
	checkInjected(t, c, "10.96.0.10:18000")
	b := bootstrapOf(t, c)
	p, ok := b.CertificateProviders[bootstrap.CertProviderInstance]
	if !ok || p.PluginName != "file_watcher" {
		t.Fatalf("container %s: certificate providers %+v, want %q with file_watcher", c.Name, b.CertificateProviders, bootstrap.CertProviderInstance)
	}
	want := map[string]string{
		"certificate_file":    "/var/run/gmesh/identity/identity.pem",
		"private_key_file":    "/var/run/gmesh/identity/identity.pem",
		"ca_certificate_file": "/var/run/gmesh/identity/ca.pem",
		"refresh_interval":    refresh,
	}
	if diff := cmp.Diff(want, p.Config); diff != "" {
		t.Errorf("container %s: file_watcher config (-want +got):\n%s", c.Name, diff)
	}
	if b.ServerListenerResourceNameTemplate != bootstrap.ServerListenerTemplate {
		t.Errorf("container %s: server_listener_resource_name_template %q, want %q", c.Name, b.ServerListenerResourceNameTemplate, bootstrap.ServerListenerTemplate)
	}
	if len(b.XDSServers) != 1 || len(b.XDSServers[0].ChannelCreds) != 1 || b.XDSServers[0].ChannelCreds[0].Type != channelCreds {
		t.Errorf("container %s: xds_servers %+v, want channel_creds %q", c.Name, b.XDSServers, channelCreds)
	}
}

func TestInjectionOfTheIdentity(t *testing.T) {
	ctx := testContext(t, 60*time.Second)
	core := append(injectNamespaces(), controlPlaneService())
	ids := &fakeIdentities{byApp: map[string]identity.Want{
		"echo-server": {Namespace: "echo", VirtualNode: "echo-server-v1", Mesh: "echo", Node: "echo-server-v1"},
	}}
	h := startWebhooks(t, &staticObjects{}, true, func(o *webhook.Options) {
		o.Identity = webhook.IdentityOptions{Identities: ids}
	}, core...)
	secret := identity.SecretName("echo-server-v1")

	for _, tc := range []struct {
		name, serviceAccount, wantKeyOf string
	}{
		{"service account", "echo-server", "echo-server"},
		{"no service account", "", "default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := tlsPod("echo-server", tc.serviceAccount)
			resp := review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, pod))
			if !resp.Allowed {
				t.Fatalf("refused: %+v", resp.Result)
			}
			if got, want := ids.lastAsked(), "echo/echo-server"; got != want {
				t.Errorf("PodIdentity asked for %q, want %q (the request's namespace, the pod's labels)", got, want)
			}
			patched := applyPatch(t, pod, resp)
			checkIdentity(t, patched, secret, tc.wantKeyOf)
			for _, c := range append(patched.Spec.InitContainers, patched.Spec.Containers...) {
				checkTLSBootstrap(t, c, "10s", "insecure")
			}
			if got := envOf(patched.Spec.Containers[0])["GREETING"].Value; got != "hi" {
				t.Errorf("the container's own env lost: GREETING=%q", got)
			}
			again := review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, patched))
			if !again.Allowed || len(again.Patch) != 0 {
				t.Errorf("reinvocation: allowed %v, patch %s; want allowed, no patch", again.Allowed, again.Patch)
			}
		})
	}

	t.Run("pod of no TLS node gets the plain patch", func(t *testing.T) {
		pod := tlsPod("echo-client", "echo-client")
		resp := review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, pod))
		want, err := webhook.InjectPatch(pod, "10.96.0.10:18000")
		if err != nil {
			t.Fatal(err)
		}
		wantJSON, _ := json.Marshal(want)
		if string(resp.Patch) != string(wantJSON) {
			t.Errorf("patch:\n%s\nwant InjectPatch's:\n%s", resp.Patch, wantJSON)
		}
		patched := applyPatch(t, pod, resp)
		if len(patched.Spec.Volumes) != 0 || bootstrapOf(t, patched.Spec.Containers[0]).CertificateProviders != nil {
			t.Errorf("a pod of no TLS node got an identity: volumes %+v, bootstrap %s", patched.Spec.Volumes, envOf(patched.Spec.Containers[0])[bootstrap.EnvConfig].Value)
		}
	})

	t.Run("pod that has part of it already", func(t *testing.T) {
		pod := tlsPod("echo-server", "echo-server")
		pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
			{Name: "data", MountPath: "/data"},
			{Name: identity.VolumeName, MountPath: identity.MountPath, ReadOnly: true},
		}
		pod.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		patched := applyPatch(t, pod, review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, pod)))
		checkIdentity(t, patched, secret, "echo-server")
		if len(patched.Spec.Volumes) != 2 || patched.Spec.Volumes[0].Name != "data" {
			t.Errorf("volumes %+v, want data then %s", patched.Spec.Volumes, identity.VolumeName)
		}
		if n := len(patched.Spec.Containers[1].VolumeMounts); n != 2 || patched.Spec.Containers[1].VolumeMounts[0].Name != "data" {
			t.Errorf("container other: mounts %+v, want data then the identity", patched.Spec.Containers[1].VolumeMounts)
		}
	})

	t.Run("container that sets its own bootstrap", func(t *testing.T) {
		pod := tlsPod("echo-server", "echo-server")
		pod.Spec.Containers[0].Env = append(pod.Spec.Containers[0].Env, corev1.EnvVar{Name: bootstrap.EnvConfig, Value: `{"mine":true}`})
		pod.Spec.Containers[1].Env = []corev1.EnvVar{{Name: bootstrap.EnvFile, Value: "/etc/bootstrap.json"}}
		patched := applyPatch(t, pod, review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, pod)))
		if got := envOf(patched.Spec.Containers[0])[bootstrap.EnvConfig].Value; got != `{"mine":true}` {
			t.Errorf("container app: its bootstrap became %s", got)
		}
		if _, ok := envOf(patched.Spec.Containers[1])[bootstrap.EnvConfig]; ok {
			t.Errorf("container other names a bootstrap file and got %s too", bootstrap.EnvConfig)
		}
		checkIdentity(t, patched, secret, "echo-server") // mounted all the same
		checkTLSBootstrap(t, patched.Spec.InitContainers[0], "10s", "insecure")
	})

	t.Run("an error denies the pod", func(t *testing.T) {
		h := startWebhooks(t, &staticObjects{}, true, func(o *webhook.Options) {
			o.Identity = webhook.IdentityOptions{Identities: &fakeIdentities{err: errors.New("virtual nodes echo/a and echo/b both select it")}}
		}, core...)
		resp := review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, tlsPod("echo-server", "echo-server")))
		if resp.Allowed || resp.Result == nil {
			t.Fatalf("allowed %v, %+v; want refused", resp.Allowed, resp.Result)
		}
		for _, want := range []string{"pod echo/echo-client-7d4b9-*", "virtual nodes echo/a and echo/b both select it"} {
			if !strings.Contains(resp.Result.Message, want) {
				t.Errorf("message %q does not name %q", resp.Result.Message, want)
			}
		}
		// A node of another namespace: its Secret cannot be mounted.
		other := startWebhooks(t, &staticObjects{}, true, func(o *webhook.Options) {
			o.Identity = webhook.IdentityOptions{Identities: &fakeIdentities{byApp: map[string]identity.Want{"echo-server": {Namespace: "elsewhere", VirtualNode: "n"}}}}
		}, core...)
		resp = review(ctx, t, other.client, other.url(webhook.PathInject), podRequest(t, tlsPod("echo-server", "echo-server")))
		if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, "virtual node elsewhere/n") {
			t.Errorf("a node of another namespace: allowed %v, %+v; want refused naming it", resp.Allowed, resp.Result)
		}
		// A namespace not labelled for injection is not asked about.
		if resp := review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, testPod("plain"))); !resp.Allowed {
			t.Errorf("a pod not injected was refused: %+v", resp.Result)
		}
	})

	t.Run("options: refresh and the xDS channel's TLS", func(t *testing.T) {
		h := startWebhooks(t, &staticObjects{}, true, func(o *webhook.Options) {
			o.Identity = webhook.IdentityOptions{Identities: ids, Refresh: 90 * time.Second, ChannelTLS: true}
		}, core...)
		pod := tlsPod("echo-server", "echo-server")
		patched := applyPatch(t, pod, review(ctx, t, h.client, h.url(webhook.PathInject), podRequest(t, pod)))
		checkTLSBootstrap(t, patched.Spec.Containers[0], "90s", "tls")
	})
}

func TestInjectIdentityPatch(t *testing.T) {
	m := &webhook.IdentityMount{SecretName: "gmesh-identity-echo-server", ServiceAccount: "sa", Refresh: 10 * time.Second}
	pod := tlsPod("echo-server", "sa")
	plain, err := webhook.InjectPatch(pod, "10.96.0.10:18000")
	if err != nil {
		t.Fatal(err)
	}
	none, err := webhook.InjectIdentityPatch(pod, "10.96.0.10:18000", nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(plain, none); diff != "" {
		t.Errorf("without an identity, the patch differs from InjectPatch's (-want +got):\n%s", diff)
	}
	ops, err := webhook.InjectIdentityPatch(pod, "10.96.0.10:18000", m)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]int{}
	for _, op := range ops {
		paths[op.Path]++
	}
	want := map[string]int{
		"/spec/volumes":                       1,
		"/spec/initContainers/0/env":          1,
		"/spec/initContainers/0/volumeMounts": 1,
		"/spec/containers/0/env/-":            3,
		"/spec/containers/0/volumeMounts":     1,
		"/spec/containers/1/env":              1,
		"/spec/containers/1/volumeMounts":     1,
	}
	if !maps.Equal(paths, want) {
		t.Errorf("operations by path %v, want %v", paths, want)
	}
	for _, bad := range []*webhook.IdentityMount{{ServiceAccount: "sa"}, {SecretName: "s"}} {
		if _, err := webhook.InjectIdentityPatch(pod, "10.96.0.10:18000", bad); err == nil {
			t.Errorf("identity %+v: got no error", bad)
		}
	}
}
