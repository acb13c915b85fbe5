package e2e

// Issue 14's local mTLS, end to end: `gmesh up` of the echo stack with
// echo-server's listener STRICT, real task processes serving through
// grpc-go's xDS server, workload certificates renewed at half-life while a
// load runs through the gateway and echo-server is deployed anew.
//
//	go test -race -count=1 -run 'TestMTLS' -v ./internal/e2e/

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	grpcstatus "google.golang.org/grpc/status"

	corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverypb "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/statedir"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

// mtlsRPS is the load through the gateway while certificates rotate and
// echo-server is deployed.
const mtlsRPS = 50

// mtlsCertLifetime is the shortest lifetime gmesh allows: renewals every
// 30 s, so a task sees two within about a minute of its start.
const mtlsCertLifetime = pki.MinLifetime

// strictStack writes the stack of `gmesh init` (programs prebuilt) with
// echo-server's virtual node made STRICT, as docs/security.md says to turn
// TLS on.
func strictStack(t *testing.T, dir string) string {
	t.Helper()
	path, b := prebuiltStack(t, dir)
	const listener = "    - portMapping: {port: 50051, protocol: grpc}\n"
	docs := strings.Split(b, "\n---\n")
	found := false
	for i, d := range docs {
		if strings.Contains(d, "kind: VirtualNode\n") && strings.Contains(d, "name: echo-server-0-9\n") {
			if strings.Count(d, listener) != 1 {
				t.Fatalf("gmesh init's echo-server-0-9 has no single %q:\n%s", listener, d)
			}
			docs[i] = strings.Replace(d, listener, listener+"      tls: {mode: STRICT}\n", 1)
			found = true
		}
	}
	if !found {
		t.Fatalf("gmesh init's stack has no virtual node echo-server-0-9:\n%s", b)
	}
	if err := os.WriteFile(path, []byte(strings.Join(docs, "\n---\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// nodeID is the SPIFFE ID gmesh gives the tasks of a virtual node of mesh
// echo.
func nodeID(node string) pki.ID { return pki.ID{Mesh: "echo", VirtualNode: node} }

// serverNode is the virtual node of an echo-server endpoint (the stack's
// and deploy's naming: echo-server-0-9 for version 0.9).
func serverNode(ep *mesh.Endpoint) string {
	return "echo-server-" + strings.ReplaceAll(ep.Attributes[mesh.AttrVersion], ".", "-")
}

// prober calls echo-server tasks directly, each call on a new connection
// (so a new handshake), presenting its own certificate from the mesh CA and
// accepting only a server certificate that chains to the CA and names the
// expected node.
type prober struct {
	cert   tls.Certificate
	bundle []byte
}

func newProber(t *testing.T, stateDir, node string) *prober {
	t.Helper()
	caDir := filepath.Join(stateDir, "ca")
	// LoadFiles also refuses a key its group or others may read: gmesh's
	// own CA must pass that.
	ca, err := pki.LoadFiles(filepath.Join(caDir, pki.CACertFile), filepath.Join(caDir, pki.CAKeyFile), nil)
	if err != nil {
		t.Fatalf("the CA gmesh up made: %v", err)
	}
	id, err := ca.Issue(nodeID(node), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(id.CertPEM, id.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &prober{cert: cert, bundle: ca.BundlePEM()}
}

// served is what one mTLS call to a task saw.
type served struct {
	reply  string
	serial *big.Int
	id     string // the SPIFFE ID in the server's certificate
}

// call makes one Echo call to addr over mTLS, requiring the server to be
// want.
func (p *prober) call(ctx context.Context, addr string, want pki.ID) (*served, error) {
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{p.cert},
		// The chain and the SPIFFE ID are checked in VerifyConnection, as
		// gmesh's own callers do: there is no host name to check.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return pki.VerifyPeer(cs.PeerCertificates, p.bundle, want, time.Now())
		},
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	var pr peer.Peer
	resp, err := echov1.NewEchoServiceClient(cc).Echo(ctx, &echov1.EchoRequest{Name: "Yusuke"}, grpc.Peer(&pr))
	if err != nil {
		return nil, err
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, fmt.Errorf("call to %s: no TLS peer (auth info %T)", addr, pr.AuthInfo)
	}
	leaf := info.State.PeerCertificates[0]
	got, err := pki.IDFromURIs(leaf.URIs)
	if err != nil {
		return nil, err
	}
	return &served{reply: resp.GetMessage(), serial: leaf.SerialNumber, id: got.String()}, nil
}

// plaintextCall makes one Echo call to addr without TLS.
func plaintextCall(ctx context.Context, addr string) (*echov1.EchoResponse, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	return echov1.NewEchoServiceClient(cc).Echo(ctx, &echov1.EchoRequest{Name: "Yusuke"})
}

// certWatch records, about once a second, the certificate in every task's
// identity file and the certificate each serving echo-server task presents
// to a new mTLS connection.
type certWatch struct {
	stateDir string
	p        *prober

	mu       sync.Mutex
	files    map[string][]*x509.Certificate // task id -> distinct certificates of its identity file, in order seen
	served   map[string][]*big.Int          // task id -> distinct serials it served, in order seen
	ids      map[string]map[string]bool     // task id -> SPIFFE IDs it served
	probes   int
	probeErr map[string]int // task id -> failed probes (a task starting or stopping)
	lastErr  map[string]error
}

func watchCerts(t *testing.T, stateDir string, p *prober) *certWatch {
	t.Helper()
	w := &certWatch{stateDir: stateDir, p: p, files: map[string][]*x509.Certificate{}, served: map[string][]*big.Int{},
		ids: map[string]map[string]bool{}, probeErr: map[string]int{}, lastErr: map[string]error{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Second) // the sampling interval
		defer tick.Stop()
		for {
			w.sample(t, ctx)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func hasSerial(list []*big.Int, s *big.Int) bool {
	for _, x := range list {
		if x.Cmp(s) == 0 {
			return true
		}
	}
	return false
}

func (w *certWatch) sample(t *testing.T, ctx context.Context) {
	// Files first: a certificate is written before it can be served.
	paths, _ := filepath.Glob(filepath.Join(w.stateDir, "tasks", "*", "tls", pki.IdentityFile))
	for _, path := range paths {
		_, leaf, err := pki.Files{Dir: filepath.Dir(path)}.Read()
		if err != nil {
			continue // removed with its task between the glob and the read
		}
		task := filepath.Base(filepath.Dir(filepath.Dir(path)))
		w.mu.Lock()
		seen := false
		for _, c := range w.files[task] {
			seen = seen || c.SerialNumber.Cmp(leaf.SerialNumber) == 0
		}
		if !seen {
			w.files[task] = append(w.files[task], leaf)
		}
		w.mu.Unlock()
	}
	st, err := tryStatus(t, w.stateDir)
	if err != nil {
		return
	}
	for _, ep := range st.Endpoints {
		if ep.Service != "echo-server" || !ep.Serving() || ep.Draining {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		s, err := w.p.call(cctx, fmt.Sprintf("%s:%d", ep.Address, ep.Port), nodeID(serverNode(ep)))
		cancel()
		w.mu.Lock()
		w.probes++
		if err != nil {
			if ctx.Err() == nil {
				w.probeErr[ep.ID]++
				w.lastErr[ep.ID] = err
			}
		} else {
			if !hasSerial(w.served[ep.ID], s.serial) {
				w.served[ep.ID] = append(w.served[ep.ID], s.serial)
			}
			if w.ids[ep.ID] == nil {
				w.ids[ep.ID] = map[string]bool{}
			}
			w.ids[ep.ID][s.id] = true
		}
		w.mu.Unlock()
	}
}

// counts returns how many distinct certificates task's file held and its
// server presented, and when the first one seen in its file expires.
func (w *certWatch) counts(task string) (files, served int, firstNotAfter time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.files[task]) > 0 {
		firstNotAfter = w.files[task][0].NotAfter
	}
	return len(w.files[task]), len(w.served[task]), firstNotAfter
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
	} else if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %#o, want %#o", path, got, want)
	}
}

// TestMTLSStrictStack is issue 14's local end-to-end test, on one `gmesh
// up` with echo-server's listener STRICT and certificates of 1 min
// (renewed every 30 s), under one load through the gateway:
//
//  1. every task comes up HEALTHY (echo-server's checks run over mTLS);
//  2. a plaintext call straight to an echo-server task fails in the
//     transport, an mTLS caller is served and sees the node's SPIFFE ID;
//  3. every task's certificate is renewed twice, each echo-server renewal is
//     what new connections get, and the first certificates expire;
//  4. then echo-server 1.0 is deployed: the echo-clients' new connections
//     to it can only succeed with renewed client certificates (their first
//     ones have expired), and its tasks present echo-server-1-0's ID.
//
// No request through the gateway fails.
func TestMTLSStrictStack(t *testing.T) {
	stateDir := t.TempDir()
	stack := strictStack(t, t.TempDir())
	v10 := buildEchoServer(t, "1.0")
	u := startUp(t, stateDir, "-f", stack, "--cert-lifetime", mtlsCertLifetime.String(), "--dashboard", "off")
	url := u.public + "/?name=Yusuke"

	// 1. Every task HEALTHY; echo-server's checks pass only over mTLS.
	waitAllServing(t, stateDir, 4, time.Minute)
	st := status(t, stateDir)
	for _, ep := range st.Endpoints {
		if ep.Health != mesh.HealthHealthy {
			t.Errorf("task %s (%s): health %s, want %s", ep.ID, ep.Service, ep.Health, mesh.HealthHealthy)
		}
	}
	strict := false
	for _, n := range st.Nodes {
		if spec, ok := n.Spec.(*mesh.VirtualNodeSpec); ok && n.Metadata.Name == "echo-server-0-9" {
			strict = spec.TLSMode() == mesh.TLSStrict
		}
	}
	if !strict {
		t.Fatalf("virtual node echo-server-0-9 is not STRICT in the control plane's state")
	}
	checkMode(t, filepath.Join(stateDir, "ca"), 0o700)
	checkMode(t, filepath.Join(stateDir, "ca", pki.CAKeyFile), 0o600)
	var oldServers []*mesh.Endpoint
	var tasks []string
	for _, ep := range st.Endpoints {
		dir := filepath.Join(stateDir, "tasks", ep.ID, "tls")
		checkMode(t, dir, 0o700)
		checkMode(t, filepath.Join(dir, pki.IdentityFile), 0o600)
		checkMode(t, filepath.Join(dir, pki.BundleFile), 0o600)
		if ep.Service == "echo-server" {
			oldServers = append(oldServers, ep)
		}
		tasks = append(tasks, ep.ID)
	}
	if len(oldServers) != 2 {
		t.Fatalf("%d echo-server tasks, want 2", len(oldServers))
	}

	// 1b. The xDS channel is authenticated: the listed xDS clients are
	// the tasks (each came in with its own certificate, over TLS), and a
	// plaintext ADS stream to the control plane is refused and logged.
	for _, c := range st.Clients {
		if !slices.Contains(tasks, c.NodeID) {
			t.Errorf("xDS client %s is no task of the mesh (tasks %v)", c.NodeID, tasks)
		}
	}
	if len(st.Clients) != len(tasks) {
		t.Errorf("%d xDS clients, want one per task (%d)", len(st.Clients), len(tasks))
	}
	checkPlaintextXDSRefused(t, stateDir)

	// The prober presents echo-client's identity: echo-client lists
	// echo-server.echo.local among its backends, so the servers' RBAC
	// admits it.
	p := newProber(t, stateDir, "echo-client-0-1")
	w := watchCerts(t, stateDir, p)
	lr := startFaultLoad(t, url, mtlsRPS, 6*time.Minute) // stopped after the deploy
	loadStart := time.Now()

	// 2. Straight to each echo-server task: plaintext fails in the
	// transport, an mTLS caller is served and sees the node's ID.
	for _, ep := range oldServers {
		addr := fmt.Sprintf("%s:%d", ep.Address, ep.Port)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := plaintextCall(ctx, addr)
		cancel()
		if err == nil {
			t.Errorf("plaintext call to STRICT task %s (%s) was served: %q", ep.ID, addr, resp.GetMessage())
		} else if s, _ := grpcstatus.FromError(err); s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "connection error") || strings.Contains(s.Message(), "connection refused") {
			// A refused connection would mean nothing listens there: the
			// mTLS call below shows the task does.
			t.Errorf("plaintext call to STRICT task %s (%s): %v; want Unavailable, a connection error on a listening port (the server ends the connection in its TLS handshake)", ep.ID, addr, err)
		} else {
			t.Logf("plaintext call to %s: %v", addr, err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		s, err := p.call(ctx, addr, nodeID("echo-server-0-9"))
		cancel()
		if err != nil {
			t.Errorf("mTLS call to task %s (%s): %v", ep.ID, addr, err)
		} else if want := fmt.Sprintf("Hello, Yusuke-san! (Said %s, Version 0.9)", ep.Address); s.reply != want || s.id != nodeID("echo-server-0-9").String() {
			t.Errorf("mTLS call to task %s: reply %q from %s; want %q from %s", ep.ID, s.reply, s.id, want, nodeID("echo-server-0-9"))
		}
	}

	// 2b. A caller with a mesh certificate whose node does not list
	// echo-server.echo.local gets PERMISSION_DENIED naming the policy, and
	// the server logs the denial with the caller's ID (grpc-go's stdout
	// audit logger, in the task's log).
	intruder := newProber(t, stateDir, "intruder")
	policy := xds.BackendsPolicy("echo-server-0-9", []string{"echo-server.echo.local"})
	for _, ep := range oldServers {
		addr := fmt.Sprintf("%s:%d", ep.Address, ep.Port)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := intruder.call(ctx, addr, nodeID("echo-server-0-9"))
		cancel()
		if s, _ := grpcstatus.FromError(err); s.Code() != codes.PermissionDenied || !strings.Contains(s.Message(), policy) {
			t.Errorf("call to task %s (%s) as vn/intruder: %v; want PermissionDenied naming %q", ep.ID, addr, err, policy)
		} else {
			t.Logf("call to %s as vn/intruder: %v", addr, err)
		}
	}
	poll(t, 30*time.Second, "the denials in echo-server's log", func() error {
		logs, err := gmesh(t, stateDir, "logs", "echo-server")
		if err != nil {
			return fmt.Errorf("gmesh logs: %v", err)
		}
		for _, ep := range oldServers {
			found := false
			for _, line := range strings.Split(logs, "\n") {
				if strings.Contains(line, " "+ep.ID+" ") && strings.Contains(line, `"grpc_audit_log"`) &&
					strings.Contains(line, `"principal":"spiffe://echo.gmesh.local/vn/intruder"`) && strings.Contains(line, `"authorized":false`) {
					found = true
				}
			}
			if !found {
				return fmt.Errorf("no audit line for vn/intruder from task %s", ep.ID)
			}
		}
		return nil
	})

	// 3. Two renewals of every task's certificate (30 s apart), each
	// echo-server renewal presented to new connections (the provider
	// rereads its files every 5 s), and every task's first certificate
	// expired: from here on a task that had not taken its renewals could
	// not complete a handshake.
	poll(t, 2*time.Minute, "two renewals of every task, served, and the first certificates expired", func() error {
		for _, id := range tasks {
			f, s, firstNotAfter := w.counts(id)
			if f < 3 {
				return fmt.Errorf("task %s: %d certificates in its file; want 3 (the first and two renewals)", id, f)
			}
			if strings.HasPrefix(id, "echo-server-") && s < 3 {
				return fmt.Errorf("task %s: presented %d certificates; want 3", id, s)
			}
			if time.Now().Before(firstNotAfter) {
				return fmt.Errorf("task %s: its first certificate is valid until %s", id, firstNotAfter.Format(time.RFC3339))
			}
		}
		return nil
	})
	rotated := time.Since(loadStart)

	// 4. Deploy 1.0 under the same load. The echo-clients connect to its
	// tasks with the certificates they hold now.
	deployStart := time.Now()
	d := startDeploy(t, stateDir, "echo-server", "--binary", v10, "--steps", "50,100", "--interval", "5s", "--timeout", "2m")
	if err := d.wait(t, 3*time.Minute); err != nil {
		t.Fatalf("deploy failed: %v\n%s", err, d.output())
	}
	t.Logf("deploy took %s:\n%s", time.Since(deployStart).Round(time.Millisecond), d.output())
	if !strings.Contains(d.output(), "Version 0.9 retired") {
		t.Errorf("deploy output does not say 0.9 was retired:\n%s", d.output())
	}
	var newServers []*mesh.Endpoint
	for _, ep := range status(t, stateDir).Endpoints {
		if ep.Service == "echo-server" && ep.Attributes[mesh.AttrVersion] == "1.0" {
			newServers = append(newServers, ep)
		}
	}
	if len(newServers) != 2 {
		t.Fatalf("%d echo-server 1.0 tasks after the deploy, want 2", len(newServers))
	}
	poll(t, 30*time.Second, "1.0 tasks probed over mTLS; 0.9 tasks' certificate directories removed", func() error {
		for _, ep := range newServers {
			if _, s, _ := w.counts(ep.ID); s == 0 {
				return fmt.Errorf("task %s: no mTLS probe answered yet", ep.ID)
			}
		}
		for _, ep := range oldServers {
			if _, err := os.Stat(filepath.Join(stateDir, "tasks", ep.ID, "tls")); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("task %s: tls directory still there (%v)", ep.ID, err)
			}
		}
		return nil
	})
	holdFor(3 * time.Second) // steady state on 1.0 alone
	res := lr.stop(t)

	w.mu.Lock()
	defer w.mu.Unlock()
	renewals := 0
	var all []string
	for id := range w.files {
		all = append(all, id)
	}
	sort.Strings(all)
	for _, id := range all {
		renewals += len(w.files[id]) - 1
		t.Logf("task %s: %d certificates in its file, %d presented to the prober, %d failed probes (last: %v), IDs presented %v",
			id, len(w.files[id]), len(w.served[id]), w.probeErr[id], w.lastErr[id], w.ids[id])
		// Every certificate presented was one gmesh wrote into its file.
		for _, s := range w.served[id] {
			found := false
			for _, c := range w.files[id] {
				found = found || c.SerialNumber.Cmp(s) == 0
			}
			if !found {
				t.Errorf("task %s presented certificate %x, which never was in its file", id, s)
			}
		}
	}
	for _, ep := range append(oldServers, newServers...) {
		want := nodeID(serverNode(ep)).String()
		if ids := w.ids[ep.ID]; len(ids) != 1 || !ids[want] {
			t.Errorf("task %s presented IDs %v, want only %s", ep.ID, ids, want)
		}
	}
	if strings.Contains(u.output(), "certificate renewal failed") {
		t.Errorf("gmesh up logged a failed renewal:\n%s", u.output())
	}
	t.Logf("load through the gateway: sent %d ok %d failed %d %v by version %v over %s; two renewals of every task after %s; %d renewals observed in %d tasks' files; %d mTLS probes",
		res.Sent, res.OK, res.Failed, res.Failures, res.ByVersion, res.Duration.Round(time.Second), rotated.Round(time.Second), renewals, len(all), w.probes)
	checkFailures(t, res, 0)
	if res.ByVersion["1.0"] == 0 || res.ByVersion["0.9"] == 0 {
		t.Errorf("the load saw versions %v; want both 0.9 and 1.0", res.ByVersion)
	}
	report(t, result{scenario: "STRICT echo-server (mTLS), certificates of 1 min: renewals, then a deploy of 1.0, under load", res: res,
		note: fmt.Sprintf("%d renewals seen in %d tasks' identity files; each 0.9 task presented its first certificate and two renewals to new connections (%d probes); 1.0 deployed after every first certificate had expired, its tasks presenting %s; plaintext to a task failed Unavailable",
			renewals, len(all), w.probes, nodeID("echo-server-1-0"))})
}

// TestMTLSRefusesReadableCAKey: `gmesh up` on a state directory whose CA
// key its group may read stops before it starts anything, naming the file.
func TestMTLSRefusesReadableCAKey(t *testing.T) {
	stateDir := t.TempDir()
	if err := os.Chmod(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	caDir := filepath.Join(stateDir, "ca")
	if _, err := pki.LoadOrCreate(caDir, nil); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(caDir, pki.CAKeyFile)
	if err := os.Chmod(key, 0o640); err != nil {
		t.Fatal(err)
	}
	// The built-in stack has no TLS: the CA an earlier run left is loaded
	// (and checked) all the same, before anything starts.
	start := time.Now()
	out, err := gmesh(t, stateDir, "up", "--listen", "127.0.0.1:0", "--task-ip-base", ipBase(), "--dashboard", "off")
	took := time.Since(start)
	if err == nil {
		t.Fatalf("gmesh up with a group-readable CA key exited 0:\n%s", out)
	}
	want := fmt.Sprintf("ca key %s has mode 0640: its group or others may read it; refusing to use it (run: chmod 600 %s)", key, key)
	if !strings.Contains(out, want) {
		t.Errorf("gmesh up output:\n%s\nwant it to contain %q", out, want)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "controlplane.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a control plane was started despite the readable key (controlplane.json: %v)", err)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "tasks")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tasks were started despite the readable key (tasks/: %v)", err)
	}
	checkMode(t, key, 0o640) // not changed behind the user's back
	t.Logf("refused in %s: %s", took.Round(time.Millisecond), strings.TrimSpace(out))
}

// TestMTLSDeployCallerUnderLoad: with echo-server STRICT, deploying its
// caller echo-client 0.1 -> 0.2 changes who may call echo-server (the new
// node lists echo-server.echo.local too; the old one goes), so echo-server's
// RBAC policy changes twice under load. No request through the gateway
// fails; afterwards echo-client 0.2's identity is served and 0.1's, whose
// virtual node is gone, is denied.
func TestMTLSDeployCallerUnderLoad(t *testing.T) {
	stateDir := t.TempDir()
	stack := strictStack(t, t.TempDir())
	u := startUp(t, stateDir, "-f", stack, "--dashboard", "off")
	waitAllServing(t, stateDir, 4, time.Minute)
	var servers []*mesh.Endpoint
	for _, ep := range status(t, stateDir).Endpoints {
		if ep.Service == "echo-server" {
			servers = append(servers, ep)
		}
	}
	if len(servers) != 2 {
		t.Fatalf("%d echo-server tasks, want 2", len(servers))
	}
	lr := startFaultLoad(t, u.public+"/?name=Yusuke", mtlsRPS, 4*time.Minute)

	d := startDeploy(t, stateDir, "echo-client", "--version", "0.2", "--env", "ECHO_CLIENT_VERSION=0.2",
		"--steps", "50,100", "--interval", "5s", "--timeout", "2m")
	if err := d.wait(t, 3*time.Minute); err != nil {
		t.Fatalf("deploy failed: %v\n%s", err, d.output())
	}
	if !strings.Contains(d.output(), "Version 0.1 retired") {
		t.Errorf("deploy output does not say 0.1 was retired:\n%s", d.output())
	}
	holdFor(3 * time.Second) // steady state on 0.2 alone
	res := lr.stop(t)

	oldClient, newClient := newProber(t, stateDir, "echo-client-0-1"), newProber(t, stateDir, "echo-client-0-2")
	for _, ep := range servers {
		addr := fmt.Sprintf("%s:%d", ep.Address, ep.Port)
		poll(t, 30*time.Second, "echo-client 0.2 served and 0.1 denied by "+ep.ID, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := newClient.call(ctx, addr, nodeID("echo-server-0-9")); err != nil {
				return fmt.Errorf("as echo-client-0-2: %v", err)
			}
			_, err := oldClient.call(ctx, addr, nodeID("echo-server-0-9"))
			if grpcstatus.Code(err) != codes.PermissionDenied {
				return fmt.Errorf("as echo-client-0-1: %v; want PermissionDenied", err)
			}
			return nil
		})
	}
	t.Logf("load through the gateway: sent %d ok %d failed %d %v by version %v over %s",
		res.Sent, res.OK, res.Failed, res.Failures, res.ByVersion, res.Duration.Round(time.Second))
	checkFailures(t, res, 0)
	report(t, result{scenario: "STRICT echo-server: its caller echo-client deployed 0.1 -> 0.2 (echo-server's RBAC policy changes twice), under load", res: res,
		note: "afterwards echo-client-0-2's identity served and echo-client-0-1's denied (PERMISSION_DENIED)"})
}

// checkPlaintextXDSRefused opens a plaintext ADS stream to the control
// plane as a task's node id: a mesh has TLS on, so it is refused with
// UNAUTHENTICATED before any resource, and the control plane logs it.
func checkPlaintextXDSRefused(t *testing.T, stateDir string) {
	t.Helper()
	cp, err := statedir.Dir{Path: stateDir}.ReadControlPlane()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(cp.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const node = "echo-client-0-1-1"
	stream, err := discoverypb.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err == nil {
		err = stream.Send(&discoverypb.DiscoveryRequest{Node: &corepb.Node{Id: node}, TypeUrl: xds.ListenerType, ResourceNames: []string{"echo-server.echo.local"}})
	}
	if err == nil {
		var resp *discoverypb.DiscoveryResponse
		resp, err = stream.Recv()
		if err == nil {
			t.Fatalf("plaintext xDS stream as %s got %d resources", node, len(resp.GetResources()))
		}
	}
	if grpcstatus.Code(err) != codes.Unauthenticated {
		t.Errorf("plaintext xDS stream as %s: %v; want Unauthenticated", node, err)
	}
	logPath := filepath.Join(stateDir, "logs", "controlplane.log")
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), `msg="xds client refused"`) && strings.Contains(string(b), "node="+node) && strings.Contains(string(b), "certificate=none") {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s has no refusal line for the plaintext stream as %s", logPath, node)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
