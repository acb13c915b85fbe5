package echo

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/health" // client-side health checking
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	echov1 "github.com/gmesh-dev/gmesh/api/echo/v1"
)

func TestEchoReply(t *testing.T) {
	ctx := testContext(t)
	s := startServer(t, ServerConfig{})
	conn := dial(t, s.Addr().String(), nil)
	long := strings.Repeat("a", MaxNameBytes)
	tests := []struct {
		name, give, want string
	}{
		{"plain", "Yizumi", "Hello, Yizumi-san! (Said 127.0.0.1, Version 0.9)"},
		{"empty name greets a stranger", "", "Hello, stranger-san! (Said 127.0.0.1, Version 0.9)"},
		{"utf-8", "吉住", "Hello, 吉住-san! (Said 127.0.0.1, Version 0.9)"},
		{"at the limit", long, "Hello, " + long + "-san! (Said 127.0.0.1, Version 0.9)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := echoCall(ctx, conn, tt.give)
			if err != nil {
				t.Fatalf("Echo(%q): %v", tt.give, err)
			}
			if got != tt.want {
				t.Errorf("Echo(%q) = %q, want %q", tt.give, got, tt.want)
			}
		})
	}
}

// Two servers on two loopback addresses say where they serve, each its own.
func TestSaidIsTheServingAddress(t *testing.T) {
	ctx := testContext(t)
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Skipf("cannot bind %s on this system: %v", ip, err)
		}
		l.Close()
	}
	// Bound to all interfaces, the server reports the address each call
	// arrived on.
	all := startServer(t, ServerConfig{Addr: ":0"})
	port := all.Addr().(*net.TCPAddr).Port
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		conn := dial(t, net.JoinHostPort(ip, strconv.Itoa(port)), nil)
		got, err := echoCall(ctx, conn, "Yusuke")
		if err != nil {
			t.Fatal(err)
		}
		if want := "Hello, Yusuke-san! (Said " + ip + ", Version 0.9)"; got != want {
			t.Errorf("via %s: got %q, want %q", ip, got, want)
		}
	}
	// Bound to one address each (HOST), two servers answer differently.
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		s := startServer(t, ServerConfig{Addr: ip + ":0"})
		got, err := echoCall(ctx, dial(t, s.Addr().String(), nil), "Yusuke")
		if err != nil {
			t.Fatal(err)
		}
		if want := "Hello, Yusuke-san! (Said " + ip + ", Version 0.9)"; got != want {
			t.Errorf("server on %s: got %q, want %q", ip, got, want)
		}
	}
}

func TestSaidOverride(t *testing.T) {
	ctx := testContext(t)
	s := startServer(t, ServerConfig{Said: "10.1.2.3", Version: "1.0"})
	got, err := echoCall(ctx, dial(t, s.Addr().String(), nil), "Yusuke")
	if err != nil {
		t.Fatal(err)
	}
	if want := "Hello, Yusuke-san! (Said 10.1.2.3, Version 1.0)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestBadInputs(t *testing.T) {
	ctx := testContext(t)
	s := startServer(t, ServerConfig{})
	conn := dial(t, s.Addr().String(), nil)

	t.Run("too long", func(t *testing.T) {
		_, err := echoCall(ctx, conn, strings.Repeat("a", MaxNameBytes+1))
		if got := status.Code(err); got != codes.InvalidArgument {
			t.Fatalf("got code %v (%v), want InvalidArgument", got, err)
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "1025 bytes") || !strings.Contains(msg, "1024") {
			t.Errorf("got message %q, want it to name the length and the limit", msg)
		}
	})
	t.Run("invalid utf-8", func(t *testing.T) {
		raw := rawRequest(protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "bad \xff name"))
		var resp echov1.EchoResponse
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err := conn.Invoke(cctx, echov1.EchoService_Echo_FullMethodName, &raw, &resp, grpc.ForceCodecV2(rawCodec{}))
		if got := status.Code(err); got != codes.InvalidArgument {
			t.Fatalf("got code %v (%v), want InvalidArgument", got, err)
		}
		if msg := status.Convert(err).Message(); msg != "name is not valid UTF-8" {
			t.Errorf("got message %q, want %q", msg, "name is not valid UTF-8")
		}
	})
	t.Run("garbage bytes", func(t *testing.T) {
		raw := rawRequest{0xff, 0xff, 0xff}
		var resp echov1.EchoResponse
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err := conn.Invoke(cctx, echov1.EchoService_Echo_FullMethodName, &raw, &resp, grpc.ForceCodecV2(rawCodec{}))
		if err == nil {
			t.Fatal("got no error for an undecodable request")
		}
	})
	t.Run("unknown fields are ignored", func(t *testing.T) {
		b := protowire.AppendTag(nil, 7, protowire.VarintType)
		b = protowire.AppendVarint(b, 42)
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, "Yizumi")
		raw := rawRequest(b)
		var resp echov1.EchoResponse
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := conn.Invoke(cctx, echov1.EchoService_Echo_FullMethodName, &raw, &resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
			t.Fatal(err)
		}
		if want := "Hello, Yizumi-san! (Said 127.0.0.1, Version 0.9)"; resp.GetMessage() != want {
			t.Errorf("got %q, want %q", resp.GetMessage(), want)
		}
	})
}

func TestDecodeRawName(t *testing.T) {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, "first")
	b = protowire.AppendTag(b, 2, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 1)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "last\xff")
	got, err := decodeRawName(b)
	if err != nil || got != "last\xff" {
		t.Errorf("decodeRawName = %q, %v; want %q, nil", got, err, "last\xff")
	}
	if _, err := decodeRawName(b[:len(b)-2]); err == nil {
		t.Error("decodeRawName of a truncated message: got no error")
	}
}

func TestFaults(t *testing.T) {
	ctx := testContext(t)
	t.Run("fail rate 1, unavailable", func(t *testing.T) {
		s := startServer(t, ServerConfig{FailRate: 1})
		_, err := echoCall(ctx, dial(t, s.Addr().String(), nil), "x")
		if got := status.Code(err); got != codes.Unavailable {
			t.Errorf("got %v, want Unavailable", got)
		}
	})
	t.Run("fail rate 1, internal", func(t *testing.T) {
		s := startServer(t, ServerConfig{FailRate: 1, FailCode: codes.Internal})
		_, err := echoCall(ctx, dial(t, s.Addr().String(), nil), "x")
		if got := status.Code(err); got != codes.Internal {
			t.Errorf("got %v, want Internal", got)
		}
	})
	t.Run("fail rate 0.5 fails some", func(t *testing.T) {
		s := startServer(t, ServerConfig{FailRate: 0.5})
		conn := dial(t, s.Addr().String(), nil)
		var ok, failed int
		for range 200 {
			if _, err := echoCall(ctx, conn, "x"); err != nil {
				if status.Code(err) != codes.Unavailable {
					t.Fatalf("got %v, want Unavailable", err)
				}
				failed++
			} else {
				ok++
			}
		}
		// Binomial(200, 0.5): outside [50, 150] has probability < 1e-12.
		if failed < 50 || failed > 150 {
			t.Errorf("got %d of 200 failed, want about 100", failed)
		}
	})
	t.Run("latency", func(t *testing.T) {
		s := startServer(t, ServerConfig{Latency: 100 * time.Millisecond})
		conn := dial(t, s.Addr().String(), nil)
		if _, err := echoCall(ctx, conn, "warm up"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := echoCall(ctx, conn, "x"); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("call took %v, want at least 100ms", d)
		}
		cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		_, err := echov1.NewEchoServiceClient(conn).Echo(cctx, &echov1.EchoRequest{Name: "x"})
		if got := status.Code(err); got != codes.DeadlineExceeded {
			t.Errorf("got %v, want DeadlineExceeded", got)
		}
	})
	t.Run("invalid knobs", func(t *testing.T) {
		for _, cfg := range []ServerConfig{
			{FailRate: -0.1}, {FailRate: 1.5}, {FailRate: 0.1, FailCode: codes.NotFound}, {Latency: -time.Second},
		} {
			cfg.Addr = "127.0.0.1:0"
			if s, err := NewServer(cfg); err == nil {
				s.Shutdown(ctx)
				t.Errorf("NewServer(%+v): got no error", cfg)
			}
		}
	})
}

func TestTLS(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	certFile, keyFile, pool := writeSelfSignedCert(t, dir)
	var logs strings.Builder
	var mu sync.Mutex
	s := startServer(t, ServerConfig{TLSCertFile: certFile, TLSKeyFile: keyFile, Logger: newLockedLogger(&logs, &mu)})

	tlsCreds := credentials.NewTLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	got, err := echoCall(ctx, dial(t, s.Addr().String(), tlsCreds), "Yizumi")
	if err != nil {
		t.Fatalf("Echo over TLS: %v", err)
	}
	if want := "Hello, Yizumi-san! (Said 127.0.0.1, Version 0.9)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := echoCall(ctx, dial(t, s.Addr().String(), nil), "plain"); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext call to a TLS server: got %v, want Unavailable", err)
	}
	mu.Lock()
	if !strings.Contains(logs.String(), "ssl: true") {
		t.Errorf("logs %q: want a line with ssl: true", logs.String())
	}
	mu.Unlock()

	t.Run("bad files", func(t *testing.T) {
		for _, tt := range []struct{ cert, key, want string }{
			{certFile, "", "both"},
			{"", keyFile, "both"},
			{dir + "/missing.pem", keyFile, "missing.pem"},
			{certFile, certFile, "key"},
		} {
			_, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", TLSCertFile: tt.cert, TLSKeyFile: tt.key})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewServer(cert %q, key %q): got %v, want an error about %q", tt.cert, tt.key, err, tt.want)
			}
		}
	})
}

func TestHealthAndReflection(t *testing.T) {
	ctx := testContext(t)
	s := startServer(t, ServerConfig{})
	conn := dial(t, s.Addr().String(), nil)
	hc := healthpb.NewHealthClient(conn)
	for _, svc := range []string{"", ServiceName} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("Check(%q): %v", svc, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check(%q) = %v, want SERVING", svc, resp.GetStatus())
		}
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	if !strings.Contains(strings.Join(names, ","), ServiceName) {
		t.Errorf("reflection lists %v, want %s among them", names, ServiceName)
	}
	stream.CloseSend()
}

// Shutdown: a Watch sees SERVING then NOT_SERVING while the listener still
// accepts; GracefulStop then ends the Watch rather than waiting on it.
func TestHealthDuringShutdown(t *testing.T) {
	ctx := testContext(t)
	s, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", Version: "0.9", DrainDelay: time.Minute, ShutdownTimeout: 20 * time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve() }()
	conn := dial(t, s.Addr().String(), nil)
	watch, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	recv := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := watch.Recv()
		if err != nil {
			t.Fatalf("Watch.Recv: %v", err)
		}
		return resp.GetStatus()
	}
	// NOT_SERVING may come first if Watch raced Serve; SERVING must follow.
	st := recv()
	if st == healthpb.HealthCheckResponse_NOT_SERVING {
		st = recv()
	}
	if st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch: got %v, want SERVING", st)
	}

	drainCtx, endDrain := context.WithCancel(context.Background())
	defer endDrain()
	shutdownErr := make(chan error, 1)
	start := time.Now()
	go func() { shutdownErr <- s.Shutdown(drainCtx) }()
	if got := recv(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after Shutdown: got %v, want NOT_SERVING", got)
	}
	// Draining: a new connection is still accepted and still served.
	fresh := dial(t, s.Addr().String(), nil)
	resp, err := healthpb.NewHealthClient(fresh).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Check on a new connection while draining: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Check while draining: got %v, want NOT_SERVING", resp.GetStatus())
	}
	if _, err := echoCall(ctx, fresh, "still served"); err != nil {
		t.Errorf("Echo while draining: %v", err)
	}
	select {
	case err := <-shutdownErr:
		t.Fatalf("Shutdown returned during the drain delay: %v", err)
	default:
	}

	endDrain() // cut the drain delay short: GracefulStop now
	select {
	case err := <-shutdownErr:
		// Cutting the drain short also cuts the wait; but with the Watch
		// ended, GracefulStop finishes at once, so it must not be forced.
		if err != nil && !strings.Contains(err.Error(), "cut short") {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Shutdown did not return: the health Watch stream holds GracefulStop")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if _, err := watch.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("Watch after stop: got %v, want Unavailable", err)
	}
	if err := <-serveErr; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
}

// Shutdown under load: two servers behind one round_robin channel with
// client-side health checking; one of them drains while 8 goroutines keep
// calling. No call fails.
func TestShutdownUnderLoadNoFailures(t *testing.T) {
	ctx := testContext(t)
	draining := startServer(t, ServerConfig{DrainDelay: 500 * time.Millisecond, Latency: 5 * time.Millisecond, ShutdownTimeout: 10 * time.Second, Said: "draining"})
	staying := startServer(t, ServerConfig{Latency: 5 * time.Millisecond, Said: "staying"})

	r := manual.NewBuilderWithScheme("echotest")
	r.InitialState(resolver.State{Addresses: []resolver.Address{
		{Addr: draining.Addr().String()}, {Addr: staying.Addr().String()},
	}})
	conn := dial(t, r.Scheme()+":///echo", nil,
		grpc.WithResolvers(r),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}],"healthCheckConfig":{"serviceName":"proto.echo.EchoService"}}`))
	conn.Connect()
	seen := map[string]bool{}
	waitFor(t, "both servers to take calls", 10*time.Second, func() bool {
		if msg, err := echoCall(ctx, conn, "warm"); err == nil {
			seen[msg] = true
		}
		return len(seen) == 2
	})

	var (
		calls, failures atomic.Int64
		firstErr        atomic.Value
		done            = make(chan struct{})
		wg              sync.WaitGroup
	)
	client := echov1.NewEchoServiceClient(conn)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ { // bounded in count, and by done
				select {
				case <-done:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := client.Echo(cctx, &echov1.EchoRequest{Name: "load"})
				cancel()
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	waitFor(t, "load to start", 10*time.Second, func() bool { return calls.Load() >= 50 })
	before := calls.Load()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := draining.Shutdown(sctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	// Keep calling a little after the stop too: the channel must have moved.
	after := calls.Load()
	waitFor(t, "calls after the stop", 10*time.Second, func() bool { return calls.Load() >= after+50 })
	for range 5 {
		msg, err := echoCall(ctx, conn, "after")
		if err != nil || !strings.Contains(msg, "Said staying") {
			t.Errorf("after the stop: got %q, %v; want a reply from the staying server", msg, err)
		}
	}
	close(done)
	wg.Wait()
	t.Logf("%d calls, %d during shutdown, %d failed", calls.Load(), after-before, failures.Load())
	if n := failures.Load(); n != 0 {
		t.Errorf("got %d failed calls, want 0; first: %v", n, firstErr.Load())
	}
	if after == before {
		t.Error("no call was made during the shutdown")
	}
}

func TestShutdownBeforeServe(t *testing.T) {
	s, err := NewServer(ServerConfig{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(testContext(t)); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := s.Serve(); err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}

func TestRunStopsOnContext(t *testing.T) {
	s, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", Version: "0.9"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testContext(t))
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	conn := dial(t, s.Addr().String(), nil)
	if _, err := echoCall(testContext(t), conn, "x"); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

// TestReadyzPlain: a plain server's /readyz (on the metrics port) follows
// its health: 503 before Serve, 200 serving, 503 while draining; /healthz
// answers 200 throughout.
func TestReadyzPlain(t *testing.T) {
	s, err := NewServer(ServerConfig{Addr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", Version: "0.9", DrainDelay: time.Minute, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "not serving yet") {
		t.Errorf("Ready before Serve: %v, want not serving yet", err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve() }()
	drainCtx, endDrain := context.WithCancel(context.Background())
	t.Cleanup(func() {
		endDrain()
		s.Shutdown(context.Background()) // waits for a Shutdown under way
		if err := <-serveErr; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	url := "http://" + s.MetricsAddr().String()
	waitFor(t, "/readyz 200", testTimeout, func() bool {
		code, _, _ := httpDo(t, "GET", url+"/readyz")
		return code == http.StatusOK
	})
	if code, body, _ := httpDo(t, "GET", url+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %q, want 200", code, body)
	}
	go s.Shutdown(drainCtx)
	waitFor(t, "/readyz 503 while draining", testTimeout, func() bool {
		code, body, _ := httpDo(t, "GET", url+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "not ready: draining")
	})
	if code, body, _ := httpDo(t, "GET", url+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while draining: %d %q, want 200", code, body)
	}
	if code, _, _ := httpDo(t, "POST", url+"/readyz"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz: %d, want 405", code)
	}
}
