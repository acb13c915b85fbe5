package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
	"github.com/gmesh-dev/gmesh/internal/pki"
	"github.com/gmesh-dev/gmesh/internal/xds"
)

var (
	tlsEnvOnce sync.Once
	theTLSEnv  *TLSMesh
	tlsEnvErr  error
)

// getTLSEnv is the mTLS rungs' fixture, built once per test binary run.
func getTLSEnv(tb testing.TB) *TLSMesh {
	tb.Helper()
	tlsEnvOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		theTLSEnv, tlsEnvErr = StartTLSMesh(ctx)
	})
	if tlsEnvErr != nil {
		tb.Fatalf("mTLS bench fixture: %v", tlsEnvErr)
	}
	return theTLSEnv
}

// TestTLSMeshPaths checks the mTLS rungs' fixture: each path answers from
// both versions, the strict paths over TLS 1.3 and the plain one in plain
// text, gmesh's translation puts the RBAC filter on both strict paths'
// listeners and none on the plain one's, and the experiment's publish
// leaves it out of the mtls-norbac path's only: a caller whose node lists
// no backend is denied on mtls and served on mtls-norbac.
func TestTLSMeshPaths(t *testing.T) {
	e := getTLSEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.EnsureNoRBAC(ctx); err != nil {
		t.Fatal(err)
	}
	translated, err := e.Translated(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Paths {
		t.Run(p.Key, func(t *testing.T) {
			cc := e.Conns[p.Key]
			if sec, err := CheckSecurity(ctx, cc, p); err != nil {
				t.Error(err)
			} else {
				t.Logf("%s: %s", p.Key, sec)
			}
			if err := WaitRouting(ctx, echov1.NewEchoServiceClient(cc), false); err != nil {
				t.Errorf("both versions: %v", err)
			}
			for i, s := range e.Servers[p.Key] {
				addr := s.Addr().String()
				if p.Strict {
					// A mesh certificate of a node that does not list
					// the service: denied where the RBAC filter is.
					err := intruderCall(ctx, e.CA, addr, p.Node([]string{"0.9", "1.0"}[i]))
					if denied := status.Code(err) == codes.PermissionDenied; denied != !p.NoRBAC || (err != nil && !denied) {
						t.Errorf("intruder calling %s: %v; want denied %v", addr, err, !p.NoRBAC)
					}
				}
				got, err := HasRBAC(translated, addr)
				if err != nil || got != p.Strict {
					t.Errorf("translation: listener of %s has RBAC %v, %v; want %v", addr, got, err, p.Strict)
				}
				got, err = HasRBAC(e.Stripped(), addr)
				if want := p.Strict && !p.NoRBAC; err != nil || got != want {
					t.Errorf("as published: listener of %s has RBAC %v, %v; want %v", addr, got, err, want)
				}
			}
		})
	}
}

// intruderCall calls the STRICT server at addr (virtual node node) with
// a certificate of the mesh's virtual node "intruder", which lists no
// backend.
func intruderCall(ctx context.Context, ca *pki.CA, addr, node string) error {
	src := pki.NewSource(ca, xds.NodeID("echo", "intruder"), 0, nil)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(src.ClientTLS(xds.NodeID("echo", node)))))
	if err != nil {
		return err
	}
	defer cc.Close()
	_, err = echov1.NewEchoServiceClient(cc).Echo(ctx, &echov1.EchoRequest{Name: "intruder"})
	return err
}

// BenchmarkMTLS is rung 3 through grpc-go's xDS server in plain text
// beside the same path with gmesh's mTLS (and with mTLS but no RBAC), at
// concurrency 1, 8 and 64. Paths alternate within each concurrency.
func BenchmarkMTLS(b *testing.B) {
	e := getTLSEnv(b)
	for _, c := range []int{1, 8, 64} {
		for _, p := range Paths {
			b.Run(fmt.Sprintf("c=%d/path=%s", c, p.Key), func(b *testing.B) {
				if p.NoRBAC {
					if err := e.EnsureNoRBAC(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
				runConcurrent(b, c, EchoCall(echov1.NewEchoServiceClient(e.Conns[p.Key])))
			})
		}
	}
}

// BenchmarkHandshake is a new loopback connection's handshake alone, both
// sides in this process: TCP connect only, TLS 1.3 with a server
// certificate only, and gmesh's mutual TLS 1.3 with ECDSA P-256 workload
// certificates from the mesh CA. ns/op is one handshake's wall time;
// cpu-us/op the process's CPU for it (client and server).
func BenchmarkHandshake(b *testing.B) {
	ca, err := pki.LoadOrCreate(filepath.Join(b.TempDir(), "ca"), nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, kind := range []string{HandshakeTCP, HandshakeTLS, HandshakeMTLS} {
		b.Run("kind="+kind, func(b *testing.B) {
			h, err := NewHandshaker(ca, kind)
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			if err := h.One(); err != nil { // warm-up
				b.Fatal(err)
			}
			b.ResetTimer()
			u0 := ReadUsage()
			for range b.N {
				if err := h.One(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			d := ReadUsage().Sub(u0)
			b.ReportMetric(float64(d.CPU)/float64(time.Microsecond)/float64(b.N), "cpu-us/op")
		})
	}
}
