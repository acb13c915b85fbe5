// Package webhook is gmesh's admission webhooks on Kubernetes and the
// certificates they are served with.
//
//   - The injector (PathInject, MutatingWebhookConfiguration
//     MutatingConfigName) gives every container of a pod in a namespace
//     labelled for injection the environment a proxyless gRPC client needs:
//     POD_NAME and POD_NAMESPACE from the downward API, then
//     GRPC_XDS_BOOTSTRAP_CONFIG naming the control plane and the node id
//     $(POD_NAMESPACE)/$(POD_NAME). A pod that a VirtualNode of a mesh with
//     TLS on selects (PodIdentities) also gets the node's identity Secret
//     (internal/k8s/identity) mounted read-only in every container, and a
//     bootstrap naming its files. Nothing else: no sidecar, no init
//     container.
//   - The validator (PathValidate, ValidatingWebhookConfiguration
//     ValidatingConfigName) refuses App Mesh objects whose references CEL
//     cannot check, because they are between objects: the referent must
//     exist and be in the referrer's mesh, and a namespaced object must
//     belong to a mesh. It runs the conversion (internal/k8s/appmesh) over
//     the informers' caches, so the rules are the ones status reports.
//     It also checks gmesh's Rollouts against the cluster (rollout.go): the
//     router, route and stable Deployment they name, one unfinished
//     Rollout per route, and no new target while a rollout runs.
//   - Certs keeps a CA and a serving certificate in a Secret; every replica
//     serves the Secret's certificate and reloads it when it changes, and
//     the leader creates, renews and publishes it (the caBundle of both
//     configurations). No cert-manager.
package webhook

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Names the manifests in deploy/kubernetes use.
const (
	// DefaultService is the control plane's Service: xDS and the webhooks.
	DefaultService = "gmesh-controlplane"
	// DefaultSecretName holds the webhook's CA and serving certificate.
	DefaultSecretName = "gmesh-webhook-tls"
	// MutatingConfigName is the injector's configuration.
	MutatingConfigName = "gmesh-injector"
	// ValidatingConfigName is the validator's configuration.
	ValidatingConfigName = "gmesh-validator"
	// PathInject is where the injector is served.
	PathInject = "/inject"
	// PathValidate is where the validator is served.
	PathValidate = "/validate"
	// DefaultAddr is where the webhooks listen.
	DefaultAddr = ":9443"
	// DefaultXDSPortName is the name of the Service's xDS port.
	DefaultXDSPortName = "xds"
)

// maxReviewBytes bounds a request body: the API server's own limit on an
// object is 3 MiB, and a review carries an object and its old version.
const maxReviewBytes = 7 << 20

// Reviewer answers one admission request.
type Reviewer interface {
	Review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse
}

// ReviewFunc adapts a function to Reviewer.
type ReviewFunc func(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse

// Review calls f.
func (f ReviewFunc) Review(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	return f(ctx, req)
}

// Handler serves AdmissionReview v1 over HTTP: a POST of a review in JSON,
// answered with the same review carrying the response.
func Handler(r Reviewer, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodPost {
			http.Error(w, "method not allowed: POST an admission.k8s.io/v1 AdmissionReview", http.StatusMethodNotAllowed)
			return
		}
		if ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type")); ct != "application/json" {
			http.Error(w, fmt.Sprintf("content type %q: want application/json", req.Header.Get("Content-Type")), http.StatusUnsupportedMediaType)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxReviewBytes))
		if err != nil {
			http.Error(w, "read the review: "+err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &review); err != nil {
			http.Error(w, "decode the review: "+err.Error(), http.StatusBadRequest)
			return
		}
		if gvk := review.GroupVersionKind(); gvk != admissionv1.SchemeGroupVersion.WithKind("AdmissionReview") {
			http.Error(w, fmt.Sprintf("got a %s, want an admission.k8s.io/v1 AdmissionReview", gvk), http.StatusBadRequest)
			return
		}
		if review.Request == nil {
			http.Error(w, "the review has no request", http.StatusBadRequest)
			return
		}
		resp := r.Review(req.Context(), review.Request)
		if resp == nil {
			resp = &admissionv1.AdmissionResponse{Allowed: true}
		}
		resp.UID = review.Request.UID
		out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
		b, err := json.Marshal(&out)
		if err != nil {
			http.Error(w, "encode the response: "+err.Error(), http.StatusInternalServerError)
			return
		}
		logger.Debug("admission reviewed", "path", req.URL.Path, "kind", review.Request.Kind.Kind, "namespace", review.Request.Namespace,
			"name", review.Request.Name, "operation", review.Request.Operation, "allowed", resp.Allowed, "patched", len(resp.Patch) > 0)
		w.Header().Set("Content-Type", "application/json")
		w.Write(b) //nolint:errcheck // the API server sees a broken response
	})
}

// allow and deny build responses.
func allow(warnings ...string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: true, Warnings: warnings}
}

func deny(code int32, reason metav1.StatusReason, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg,
	}}
}

// Server serves the webhooks over TLS with a certificate that may change.
type Server struct {
	ln   net.Listener
	http *http.Server
	log  *slog.Logger
}

// NewServer binds addr; Serve serves mux over TLS with getCert's
// certificate (read at each handshake, so a renewed one is served at
// once).
func NewServer(addr string, mux http.Handler, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("webhook: listen on %s: %w", addr, err)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert}
	return &Server{
		ln:  tls.NewListener(ln, tlsCfg),
		log: logger,
		http: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		},
	}, nil
}

// Addr is the address served.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends, then shuts down (5 s at most).
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("webhook: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.http.Shutdown(sctx); err != nil {
		s.http.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("webhook: serve: %w", err)
	}
	return nil
}

// Close closes the listener of a server that never served.
func (s *Server) Close() error { return s.ln.Close() }
