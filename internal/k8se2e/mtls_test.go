package k8se2e_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/api/gmesh/v1alpha1"
	"github.com/gmesh-dev/gmesh/internal/k8s/identity"
	"github.com/gmesh-dev/gmesh/internal/load"
	"github.com/gmesh-dev/gmesh/internal/pki"
)

// echoServerPort is echo-server's gRPC port in the echo example.
const echoServerPort = "50051"

// workload is a pod identity read from its node's identity Secret, as the
// pods of that node present it.
type workload struct {
	cert   tls.Certificate
	leaf   *x509.Certificate
	bundle []byte
}

// identityOf reads the identity of node's pods that run as the default
// service account from its Secret.
func (c *cluster) identityOf(ctx context.Context, node string) (*workload, error) {
	s, err := c.c.Client().CoreV1().Secrets(echoNS).Get(ctx, identity.SecretName(node), metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	pemBytes, bundle := s.Data[identity.KeyFor("default")], s.Data[identity.BundleKey]
	if len(pemBytes) == 0 || len(bundle) == 0 {
		return nil, fmt.Errorf("secret %s/%s: keys %v, want %s and %s", echoNS, s.Name, keysOf(s.Data), identity.KeyFor("default"), identity.BundleKey)
	}
	cert, err := tls.X509KeyPair(pemBytes, pemBytes)
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s key %s: %w", echoNS, s.Name, identity.KeyFor("default"), err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, err
	}
	return &workload{cert: cert, leaf: leaf, bundle: bundle}, nil
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// podID is the SPIFFE ID of a pod of the echo example's node (its gmesh
// name, NAME.echo) running as the default service account.
func podID(node string) pki.ID {
	return pki.ID{Mesh: "echo", Namespace: echoNS, ServiceAccount: "default", VirtualNode: node + "." + echoNS}
}

// tlsTo is w's mTLS configuration for a server that must present want's
// identity; served receives the server's certificate.
func (w *workload) tlsTo(want pki.ID, served func(*x509.Certificate)) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{w.cert},
		NextProtos:   []string{"h2"},
		// The server's certificate names a SPIFFE ID, not a host: checked
		// below against the bundle and the ID, as grpc-go's xDS client does.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var chain []*x509.Certificate
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				chain = append(chain, c)
			}
			if len(chain) > 0 && served != nil {
				served(chain[0])
			}
			return pki.VerifyPeer(chain, w.bundle, want, time.Now())
		},
	}
}

// echoCall makes one Echo call to addr over creds.
func echoCall(ctx context.Context, addr string, creds credentials.TransportCredentials) (string, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := echov1.NewEchoServiceClient(conn).Echo(cctx, &echov1.EchoRequest{Name: "mtls"})
	if err != nil {
		return "", err
	}
	return resp.GetMessage(), nil
}

// servedCert is the certificate the echo-server at ip presents to w, after
// a call w makes as itself (answered, or the error).
func (c *cluster) servedCert(ctx context.Context, ip string, w *workload, want pki.ID) (*x509.Certificate, string, error) {
	var leaf *x509.Certificate
	reply, err := echoCall(ctx, net.JoinHostPort(ip, echoServerPort), credentials.NewTLS(w.tlsTo(want, func(c *x509.Certificate) { leaf = c })))
	return leaf, reply, err
}

// TestMTLSOnRealCluster is issue 14's end-to-end test on Kubernetes: the
// echo example with echo-server STRICT (examples/kubernetes/echo-mtls),
// certificates living two minutes, under 100 rps through the gateway for
// the whole test. Every pod gets its identity from gmesh (a Secret per
// virtual node, mounted by the webhook); a plaintext call to echo-server
// fails; a node whose backends do not list echo-server is denied; every
// certificate is renewed and the first ones expire; a deploy of 1.0 runs;
// and no request through the gateway fails.
func TestMTLSOnRealCluster(t *testing.T) {
	const lifetime = 2 * time.Minute
	c, ctx, gw := startExample(t, echoSetup{
		example:          "examples/kubernetes/echo-mtls",
		controlPlaneArgs: []string{"--workload-cert-lifetime=" + lifetime.String()},
	})
	kube := c.c.Client()
	run := startLoad(ctx, t, gw, 15*time.Minute)
	loadStart := time.Now()

	client, err := c.identityOf(ctx, "echo-client-0-1")
	if err != nil {
		t.Fatalf("echo-client's identity: %v", err)
	}
	if got, want := client.leaf.URIs, podID("echo-client-0-1").String(); len(got) != 1 || got[0].String() != want {
		t.Fatalf("echo-client's certificate names %v, want %s", got, want)
	}
	if left := time.Until(client.leaf.NotAfter); left > lifetime+time.Minute {
		t.Errorf("echo-client's certificate lives until %s (%s from now), want at most --workload-cert-lifetime %s", client.leaf.NotAfter, left.Round(time.Second), lifetime)
	}
	serverIPs := c.readyPodIPs(ctx, echoNS, "app=echo-server,version=0.9")
	if len(serverIPs) != 2 {
		t.Fatalf("echo-server 0.9 Ready pods: %v, want 2", serverIPs)
	}

	t.Run("each echo-server pod serves its node's identity over mTLS and refuses plain text", func(t *testing.T) {
		for _, ip := range serverIPs {
			leaf, reply, err := c.servedCert(ctx, ip, client, podID("echo-server-0-9"))
			if err != nil || !strings.Contains(reply, "Version 0.9") {
				t.Errorf("mTLS call to %s as echo-client: %q, %v; want a reply from 0.9", ip, reply, err)
			} else {
				t.Logf("%s presents %s until %s", ip, leaf.URIs[0], leaf.NotAfter.Format(time.TimeOnly))
			}
			_, err = echoCall(ctx, net.JoinHostPort(ip, echoServerPort), insecure.NewCredentials())
			if status.Code(err) != codes.Unavailable {
				t.Errorf("plaintext call to %s: %v, want Unavailable (the server speaks only TLS)", ip, err)
			} else {
				t.Logf("plaintext call to %s: %v", ip, err)
			}
		}
	})

	t.Run("the xDS channel: a plaintext stream claiming an echo-client pod is refused", func(t *testing.T) {
		clients := c.readyPods(ctx, echoNS, "app=echo-client")
		cps := c.readyPods(ctx, cpNamespace, "app.kubernetes.io/name=gmesh")
		if len(clients) == 0 || len(cps) == 0 {
			t.Fatalf("%d echo-client pods, %d control plane pods", len(clients), len(cps))
		}
		conn, err := grpc.NewClient(net.JoinHostPort(cps[0].Status.PodIP, "18000"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		st, err := discoverypb.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
		if err == nil {
			err = st.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: echoNS + "/" + clients[0].Name}, TypeUrl: "type.googleapis.com/envoy.config.listener.v3.Listener"})
		}
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("a plaintext ADS stream as %s/%s: %v, want Unauthenticated", echoNS, clients[0].Name, err)
		} else {
			t.Logf("a plaintext ADS stream as %s/%s: %v", echoNS, clients[0].Name, err)
		}
	})

	t.Run("a node whose backends do not list echo-server is denied", func(t *testing.T) {
		c := c.in(t)
		c.kubectlOK(ctx, `apiVersion: appmesh.k8s.aws/v1beta2
kind: VirtualNode
metadata:
  name: intruder
  namespace: echo
spec:
  podSelector:
    matchLabels: {app: intruder}
  listeners:
    - portMapping: {port: 8080, protocol: http}
`, "apply", "-f", "-")
		deps := kube.AppsV1().Deployments(echoNS)
		tmpl, err := deps.Get(ctx, "echo-client-0-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d := tmpl.DeepCopy()
		d.ObjectMeta = metav1.ObjectMeta{Name: "intruder", Namespace: echoNS}
		one := int32(1)
		d.Spec.Replicas = &one
		d.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "intruder"}}
		d.Spec.Template.Labels = map[string]string{"app": "intruder"}
		if _, err := deps.Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var w *workload
		c.poll(ctx, "the intruder's identity Secret", 2*time.Minute, func() (bool, string) {
			w, err = c.identityOf(ctx, "intruder")
			return err == nil, fmt.Sprint(err)
		})
		if got, want := w.leaf.URIs[0].String(), podID("intruder").String(); got != want {
			t.Errorf("the intruder's certificate names %s, want %s", got, want)
		}
		_, reply, err := c.servedCert(ctx, serverIPs[0], w, podID("echo-server-0-9"))
		st, _ := status.FromError(err)
		if st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "echo-server-0-9.echo") {
			t.Errorf("a call as the intruder: %q, %v; want PermissionDenied naming echo-server-0-9.echo", reply, err)
		} else {
			t.Logf("a call as the intruder: %v", err)
		}
		// The intruder's own pod, calling echo-server through the mesh, is
		// never answered.
		var ips []string
		c.poll(ctx, "the intruder's pod Ready", 2*time.Minute, func() (bool, string) {
			ips = c.readyPodIPs(ctx, echoNS, "app=intruder")
			return len(ips) == 1, fmt.Sprint(ips)
		})
		code, body := get(ctx, t, fmt.Sprintf("http://%s:8080/?name=intruder", ips[0]))
		if code == http.StatusOK || !strings.Contains(body, "PermissionDenied") {
			t.Errorf("the intruder pod's call through the mesh: %d %q, want a failure that says PermissionDenied", code, body)
		} else {
			t.Logf("the intruder pod's call through the mesh: %d %q", code, strings.TrimSpace(body))
		}
		if err := deps.Delete(ctx, "intruder", metav1.DeleteOptions{}); err != nil {
			t.Error(err)
		}
		c.kubectlOK(ctx, "", "-n", echoNS, "delete", "virtualnode", "intruder")
		c.poll(ctx, "the intruder's identity Secret deleted with its node", 2*time.Minute, func() (bool, string) {
			_, err := kube.CoreV1().Secrets(echoNS).Get(ctx, identity.SecretName("intruder"), metav1.GetOptions{})
			return err != nil, fmt.Sprint(err)
		})
	})

	t.Run("every certificate renewed and the first ones expired, under load", func(t *testing.T) {
		c := c.in(t)
		first := map[string]*x509.Certificate{}
		renewed := map[string]*x509.Certificate{}
		var expiry time.Time
		c.poll(ctx, "each echo-server pod presenting a renewed certificate after its first expired", 2*lifetime+2*time.Minute, func() (bool, string) {
			w, err := c.identityOf(ctx, "echo-client-0-1")
			if err != nil {
				return false, err.Error()
			}
			for _, ip := range serverIPs {
				leaf, _, err := c.servedCert(ctx, ip, w, podID("echo-server-0-9"))
				if err != nil {
					return false, fmt.Sprintf("%s: %v", ip, err)
				}
				if first[ip] == nil {
					first[ip] = leaf
					if leaf.NotAfter.After(expiry) {
						expiry = leaf.NotAfter
					}
				} else if leaf.SerialNumber.Cmp(first[ip].SerialNumber) != 0 && renewed[ip] == nil {
					renewed[ip] = leaf
					t.Logf("%s renewed: %s until %s (the first until %s)", ip, leaf.SerialNumber, leaf.NotAfter.Format(time.TimeOnly), first[ip].NotAfter.Format(time.TimeOnly))
				}
			}
			if w.leaf.SerialNumber.Cmp(client.leaf.SerialNumber) == 0 {
				return false, "echo-client's certificate not renewed yet"
			}
			return len(renewed) == len(serverIPs) && time.Now().After(expiry.Add(5*time.Second)),
				fmt.Sprintf("renewed %d of %d, the first certificates expire at %s", len(renewed), len(serverIPs), expiry.Format(time.TimeOnly))
		})
		t.Logf("every certificate renewed, the first ones expired %s into the load", time.Since(loadStart).Round(time.Second))
	})

	t.Run("0.9 to 1.0 in steps 50, 100 under load", func(t *testing.T) {
		c := c.in(t)
		start := time.Now()
		c.kubectlOK(ctx, rolloutYAML("echo-server-0-9", "1.0", image("gmesh.local/echo-server:1.0"), "[50, 100]", "5s"), "apply", "-f", "-")
		st := c.waitRollout(ctx, "ended", 5*time.Minute, func(st *v1alpha1.RolloutStatus) bool {
			return st.Phase == "Succeeded" || st.Phase == "RolledBack" || st.Phase == "Failed" || st.Phase == "Aborted"
		})
		t.Logf("rollout %s in %s", st.Phase, time.Since(start).Round(time.Millisecond))
		for _, e := range st.Events {
			t.Logf("  %s %-13s %s", e.Time, e.Phase, e.Message)
		}
		if st.Phase != "Succeeded" {
			t.Fatalf("the rollout ended %s: %s %s", st.Phase, st.Message, st.Reason)
		}
		w, err := c.identityOf(ctx, "echo-client-0-1")
		if err != nil {
			t.Fatal(err)
		}
		for _, ip := range c.readyPodIPs(ctx, echoNS, "app=echo-server") {
			if _, reply, err := c.servedCert(ctx, ip, w, podID("echo-server-1-0")); err != nil || !strings.Contains(reply, "Version 1.0") {
				t.Errorf("mTLS call to %s expecting echo-server-1-0's identity: %q, %v", ip, reply, err)
			}
		}
		c.poll(ctx, "0.9's identity Secret deleted with its node", 2*time.Minute, func() (bool, string) {
			_, err := kube.CoreV1().Secrets(echoNS).Get(ctx, identity.SecretName("echo-server-0-9"), metav1.GetOptions{})
			return err != nil, fmt.Sprint(err)
		})
	})

	res, reports := run.finish(ctx, 5)
	t.Logf("load through the gateway for %s: %s", time.Since(loadStart).Round(time.Second), load.FormatReport(load.Report{Counts: res.Counts}))
	checkNoFailures(t, "the load through the whole test", res)
	if res.Failed > 0 {
		// Where and why: the seconds with failures, and every non-200 the
		// gateway and echo-client pods logged.
		for _, r := range reports {
			if r.Failed > 0 {
				t.Logf("second ending %s: %d failed %v", r.end.UTC().Format("15:04:05.000"), r.Failed, r.Failures)
			}
		}
		for _, app := range []string{gatewayApp, "echo-client"} {
			out, err := c.kubectl(ctx, "", "logs", "-n", echoNS, "-l", "app="+app, "--tail=-1", "--prefix")
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "status=") && !strings.Contains(line, "status=200") && !strings.Contains(line, "/readyz") {
					t.Logf("%s", line)
				}
			}
			if err != nil {
				t.Logf("logs of %s: %v", app, err)
			}
		}
		out, _ := c.kubectl(ctx, "", "logs", "-n", cpNamespace, "-l", "app.kubernetes.io/name=gmesh", "--tail=-1", "--prefix")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
				t.Logf("%s", line)
			}
		}
	}
	if res.ByVersion["1.0"] == 0 {
		t.Errorf("no reply from 1.0 through the gateway: %v", res.ByVersion)
	}
}
