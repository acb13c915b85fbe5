package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/mesh"
)

// TestStatusCertificates: with TLS on, `gmesh status` shows the CA's
// expiry and each task's certificate, and warns of an expired certificate
// and of a failed renewal; without TLS it shows nothing of them.
func TestStatusCertificates(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	task := func(id, notAfter string, renewals, failures int, lastErr string) *mesh.Endpoint {
		return &mesh.Endpoint{ID: id, Mesh: "echo", Service: "echo-server", Address: "127.0.0.2", Port: 50051, State: mesh.TaskRunning, Health: mesh.HealthHealthy,
			Process: &mesh.ProcessStatus{PID: 42, Certificate: mesh.CertificateStatus{ID: "spiffe://echo.gmesh.local/vn/echo-server-0-9",
				NotAfter: notAfter, RenewAt: "2026-12-01T12:10:00Z", Renewals: renewals, Failures: failures, LastError: lastErr}}}
	}
	st := &controlplane.Status{
		CA: &controlplane.CAStatus{Subject: "CN=gmesh mesh CA,O=gmesh", NotAfter: time.Date(2036, 11, 28, 12, 0, 0, 0, time.UTC)},
		Endpoints: []*mesh.Endpoint{
			task("echo-server-0-9-1", "2026-12-01T12:30:00Z", 3, 0, ""),
			task("echo-server-0-9-2", "2026-12-01T12:20:00Z", 1, 4, "ca state/ca/ca.crt expired at 2026-12-01T11:00:00Z: no certificate can be issued; replace the CA"),
			task("echo-server-0-9-3", "2026-12-01T11:59:00Z", 0, 2, "disk full"),
			{ID: "echo-client-0-1-1", Mesh: "echo", Service: "echo-client", State: mesh.TaskRunning},
		},
	}
	var b bytes.Buffer
	printCertificates(&b, st, now)
	out := b.String()
	t.Log("\n" + out)
	for _, want := range []string{
		"CA\tCN=gmesh mesh CA,O=gmesh\texpires 2036-11-28T12:00:00Z (in 3650d)",
		"TASK\tCERTIFICATE\tEXPIRES\tRENEWALS\tRENEWAL",
		"echo-server-0-9-1\tspiffe://echo.gmesh.local/vn/echo-server-0-9\t2026-12-01T12:30:00Z (in 30m0s)\t3\tat ",
		"echo-server-0-9-2\tspiffe://echo.gmesh.local/vn/echo-server-0-9\t2026-12-01T12:20:00Z (in 20m0s)\t1\tFAILED 4 times, retry at ",
		"echo-server-0-9-3\tspiffe://echo.gmesh.local/vn/echo-server-0-9\t2026-12-01T11:59:00Z (EXPIRED 1m0s ago)\t0\tFAILED 2 times",
		"WARNING: renewing task echo-server-0-9-2's certificate failed 4 times (the current one stays in place): ca state/ca/ca.crt expired at 2026-12-01T11:00:00Z",
		"WARNING: task echo-server-0-9-3's certificate (spiffe://echo.gmesh.local/vn/echo-server-0-9) expired at 2026-12-01T11:59:00Z: its TLS handshakes fail until it is renewed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status does not show %q", want)
		}
	}
	if strings.Contains(out, "echo-client-0-1-1") {
		t.Error("a task without a certificate is listed among certificates")
	}
	if n := strings.Count(out, "WARNING"); n != 3 {
		t.Errorf("%d warnings, want 3 (two failed renewals, one expired)", n)
	}

	// The CA expired.
	b.Reset()
	printCertificates(&b, &controlplane.Status{CA: &controlplane.CAStatus{Subject: "CN=ca", NotAfter: now.Add(-time.Hour)}}, now)
	if !strings.Contains(b.String(), "WARNING: the mesh CA expired at 2026-12-01T11:00:00Z") {
		t.Errorf("expired CA: got %q, want a warning", b.String())
	}

	// No TLS: nothing.
	b.Reset()
	printCertificates(&b, &controlplane.Status{Endpoints: st.Endpoints[3:]}, now)
	if b.Len() != 0 {
		t.Errorf("without TLS: got %q, want nothing", b.String())
	}
}
