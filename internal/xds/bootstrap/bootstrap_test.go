package bootstrap_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/xds"

	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

func TestJSON(t *testing.T) {
	got, err := bootstrap.JSON("127.0.0.1:15010", "echo-client-1", map[string]string{"service": "echo-client"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "xds_servers": [
    {
      "server_uri": "127.0.0.1:15010",
      "channel_creds": [
        {
          "type": "insecure"
        }
      ],
      "server_features": [
        "xds_v3"
      ]
    }
  ],
  "node": {
    "id": "echo-client-1",
    "locality": {
      "region": "gmesh",
      "zone": "local"
    },
    "metadata": {
      "service": "echo-client"
    }
  }
}`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("JSON mismatch (-want +got):\n%s", diff)
	}
	// grpc-go must accept it.
	if _, err := xds.NewXDSResolverWithConfigForTesting(got); err != nil {
		t.Errorf("grpc-go rejects the bootstrap: %v", err)
	}
}

// TestConfigJSON checks the fields other implementations read: node.locality
// is always there (grpc-js-xds refuses a bootstrap without it), cluster and
// metadata only when given.
func TestConfigJSON(t *testing.T) {
	tests := []struct {
		name string
		cfg  bootstrap.Config
		want map[string]any // the node object
	}{
		{
			name: "defaults",
			cfg:  bootstrap.Config{ServerURI: "127.0.0.1:1", NodeID: "n"},
			want: map[string]any{"id": "n", "locality": map[string]any{"region": "gmesh", "zone": "local"}},
		},
		{
			name: "everything",
			cfg: bootstrap.Config{ServerURI: "[::1]:15010", NodeID: "mesh/echo/virtualNode/billing/1", Cluster: "billing",
				Locality: bootstrap.Locality{Region: "eu", Zone: "eu-1a", SubZone: "rack7"}, Metadata: map[string]string{"k": "v"}},
			want: map[string]any{"id": "mesh/echo/virtualNode/billing/1", "cluster": "billing",
				"locality": map[string]any{"region": "eu", "zone": "eu-1a", "sub_zone": "rack7"}, "metadata": map[string]any{"k": "v"}},
		},
		{
			name: "zone only",
			cfg:  bootstrap.Config{ServerURI: "localhost:15010", NodeID: "n", Locality: bootstrap.Locality{Zone: "z"}},
			want: map[string]any{"id": "n", "locality": map[string]any{"zone": "z"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.cfg.JSON()
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				XDSServers []map[string]any `json:"xds_servers"`
				Node       map[string]any   `json:"node"`
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.Node); diff != "" {
				t.Errorf("node mismatch (-want +got):\n%s", diff)
			}
			wantServers := []map[string]any{{
				"server_uri":      tt.cfg.ServerURI,
				"channel_creds":   []any{map[string]any{"type": "insecure"}},
				"server_features": []any{"xds_v3"},
			}}
			if diff := cmp.Diff(wantServers, got.XDSServers); diff != "" {
				t.Errorf("xds_servers mismatch (-want +got):\n%s", diff)
			}
			if _, err := xds.NewXDSResolverWithConfigForTesting(b); err != nil {
				t.Errorf("grpc-go rejects the bootstrap: %v", err)
			}
		})
	}
}

func TestJSONErrors(t *testing.T) {
	tests := []struct{ uri, node, want string }{
		{"", "n", "empty server uri"},
		{"127.0.0.1:1", "", "empty node id"},
		{"127.0.0.1:1", "  ", "empty node id"},
		{"127.0.0.1", "n", `server uri "127.0.0.1": want host:port`},
		{":15010", "n", `server uri ":15010": empty host`},
		{"127.0.0.1:0", "n", `port "0" is not in 1..65535`},
		{"127.0.0.1:http", "n", `port "http" is not in 1..65535`},
	}
	for _, tt := range tests {
		_, err := bootstrap.JSON(tt.uri, tt.node, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("JSON(%q, %q) error = %v, want %q", tt.uri, tt.node, err, tt.want)
		}
	}
}

func TestEnv(t *testing.T) {
	got, err := bootstrap.Env("127.0.0.1:1", "n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "GRPC_XDS_BOOTSTRAP_CONFIG={") {
		t.Errorf("Env = %q, want GRPC_XDS_BOOTSTRAP_CONFIG={...", got)
	}
}

// TestTLS: with a workload certificate the bootstrap names grpc-go's
// file_watcher provider and the server listener template; grpc-go parses
// both (its bootstrap parser builds the provider's config).
func TestTLS(t *testing.T) {
	cfg := bootstrap.Config{ServerURI: "127.0.0.1:15010", NodeID: "n", TLS: &bootstrap.TLS{
		CertificateFile:   "/s/tasks/t-1/tls/identity.pem",
		PrivateKeyFile:    "/s/tasks/t-1/tls/identity.pem",
		CACertificateFile: "/s/tasks/t-1/tls/ca.pem",
		RefreshInterval:   90 * time.Second,
	}}
	b, err := cfg.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	wantProviders := map[string]any{"gmesh": map[string]any{
		"plugin_name": "file_watcher",
		"config": map[string]any{
			"certificate_file":    "/s/tasks/t-1/tls/identity.pem",
			"private_key_file":    "/s/tasks/t-1/tls/identity.pem",
			"ca_certificate_file": "/s/tasks/t-1/tls/ca.pem",
			"refresh_interval":    "90s",
		},
	}}
	if diff := cmp.Diff(wantProviders, got["certificate_providers"]); diff != "" {
		t.Errorf("certificate_providers mismatch (-want +got):\n%s", diff)
	}
	if got, want := got["server_listener_resource_name_template"], "grpc/server?xds.resource.listening_address=%s"; got != want {
		t.Errorf("server_listener_resource_name_template = %v, want %q", got, want)
	}
	if _, err := xds.NewXDSResolverWithConfigForTesting(b); err != nil {
		t.Errorf("grpc-go rejects the bootstrap: %v", err)
	}
	servers := got["xds_servers"].([]any)
	if diff := cmp.Diff([]any{map[string]any{"type": "insecure"}}, servers[0].(map[string]any)["channel_creds"]); diff != "" {
		t.Errorf("channel_creds without Channel (-want +got):\n%s", diff)
	}

	// Channel: the same files secure the xDS channel (gRFC A65).
	cfg.TLS.Channel = true
	b, err = cfg.JSON()
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	wantCreds := []any{map[string]any{"type": "tls", "config": map[string]any{
		"certificate_file":    "/s/tasks/t-1/tls/identity.pem",
		"private_key_file":    "/s/tasks/t-1/tls/identity.pem",
		"ca_certificate_file": "/s/tasks/t-1/tls/ca.pem",
		"refresh_interval":    "90s",
	}}}
	if diff := cmp.Diff(wantCreds, got["xds_servers"].([]any)[0].(map[string]any)["channel_creds"]); diff != "" {
		t.Errorf("channel_creds with Channel (-want +got):\n%s", diff)
	}
	if _, err := xds.NewXDSResolverWithConfigForTesting(b); err != nil {
		t.Errorf("grpc-go rejects the bootstrap with tls channel_creds: %v", err)
	}

	if got, want := bootstrap.ServerListenerName("127.0.0.3:50051"), "grpc/server?xds.resource.listening_address=127.0.0.3:50051"; got != want {
		t.Errorf("ServerListenerName = %q, want %q", got, want)
	}

	for _, bad := range []*bootstrap.TLS{
		{CertificateFile: "c", PrivateKeyFile: "k"},
		{CertificateFile: "c", PrivateKeyFile: "k", CACertificateFile: "ca", RefreshInterval: -time.Second},
	} {
		if _, err := (bootstrap.Config{ServerURI: "127.0.0.1:1", NodeID: "n", TLS: bad}).JSON(); err == nil {
			t.Errorf("TLS %+v: got no error", bad)
		}
	}
}
