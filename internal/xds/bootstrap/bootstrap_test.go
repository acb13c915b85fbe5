package bootstrap_test

import (
	"strings"
	"testing"

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
      "server_features": []
    }
  ],
  "node": {
    "id": "echo-client-1",
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

func TestJSONErrors(t *testing.T) {
	tests := []struct{ uri, node, want string }{
		{"", "n", "empty server uri"},
		{"127.0.0.1:1", "", "empty node id"},
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
