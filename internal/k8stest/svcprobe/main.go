// Command svcprobe runs in pods of the k8stest cluster to check its Service
// routing from inside the pod network (TestServices):
//
//	svcprobe incluster   the in-cluster client (KUBERNETES_SERVICE_HOST, the
//	                     pod's service account token and CA) asks the API
//	                     server who it is; exits 0 and prints the user
//	svcprobe webhook     a validating admission webhook on :9443 (TLS from
//	                     /tls/tls.crt and /tls/tls.key) that denies objects
//	                     whose name starts with "denied-"
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: svcprobe incluster | webhook")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "incluster":
		err = inCluster()
	case "webhook":
		err = webhook()
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "svcprobe:", err)
		os.Exit(1)
	}
}

func inCluster() error {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return fmt.Errorf("in-cluster config: %w", err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("make a client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("self subject review at %s: %w", cfg.Host, err)
	}
	fmt.Printf("in-cluster client at %s is %s\n", cfg.Host, r.Status.UserInfo.Username)
	return nil
}

func webhook() error {
	mux := http.NewServeMux()
	mux.HandleFunc("/validate", func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "want an AdmissionReview", http.StatusBadRequest)
			return
		}
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		if strings.HasPrefix(review.Request.Name, "denied-") {
			resp.Allowed = false
			resp.Result = &metav1.Status{Message: "denied by svcprobe: " + review.Request.Name}
		}
		review.Response, review.Request = resp, nil
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(&review)
	})
	srv := &http.Server{Addr: ":9443", Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return srv.ListenAndServeTLS("/tls/tls.crt", "/tls/tls.key")
}
