package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/xds"

	"github.com/gmesh-dev/gmesh/internal/cli"
	"github.com/gmesh-dev/gmesh/internal/statedir"
)

// TestBootstrap runs `gmesh bootstrap` against a state directory that
// records a control plane, one whose control plane is gone, and none.
func TestBootstrap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	live := t.TempDir()
	if err := (statedir.Dir{Path: live}).WriteControlPlane(statedir.ControlPlane{Addr: "127.0.0.1:15010", PID: os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	gone := t.TempDir()
	if err := (statedir.Dir{Path: gone}).WriteControlPlane(statedir.ControlPlane{Addr: "127.0.0.1:15011", PID: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	none := filepath.Join(t.TempDir(), "none")
	out := filepath.Join(t.TempDir(), "bootstrap.json")
	certFile := filepath.Join(t.TempDir(), "identity.pem")
	if err := os.WriteFile(certFile, []byte("pem"), 0o600); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := cli.Main(ctx, cli.IO{In: strings.NewReader(""), Out: &stdout, Err: &stderr}, args)
		return code, stdout.String(), stderr.String()
	}
	tests := []struct {
		gmeshCase
		// wantURI and wantNode, when set, are checked in stdout's JSON.
		wantURI  string
		wantNode map[string]any
	}{
		{gmeshCase: gmeshCase{name: "from the state directory", args: []string{"bootstrap", "--state-dir", live, "--node-id", "billing-1"}, wantErr: "^$"},
			wantURI: "127.0.0.1:15010", wantNode: map[string]any{"id": "billing-1", "locality": map[string]any{"region": "gmesh", "zone": "local"}}},
		{gmeshCase: gmeshCase{name: "--server", args: []string{"bootstrap", "--state-dir", none, "--server", "127.0.0.1:7", "--node-id", "n"}},
			wantURI: "127.0.0.1:7"},
		{gmeshCase: gmeshCase{name: "--xds-server wins", args: []string{"bootstrap", "--state-dir", live, "--server", "127.0.0.1:7", "--xds-server", "[::1]:8", "--node-id", "n"}},
			wantURI: "[::1]:8"},
		{gmeshCase: gmeshCase{name: "every node field", args: []string{"bootstrap", "--state-dir", live, "--node-id", "mesh/echo/virtualNode/billing/h-1",
			"--cluster", "billing", "--region", "eu", "--zone", "eu-1a", "--sub-zone", "r7", "--metadata", "team=pay", "--metadata", "x=a=b"}},
			wantURI: "127.0.0.1:15010", wantNode: map[string]any{"id": "mesh/echo/virtualNode/billing/h-1", "cluster": "billing",
				"locality": map[string]any{"region": "eu", "zone": "eu-1a", "sub_zone": "r7"}, "metadata": map[string]any{"team": "pay", "x": "a=b"}}},
		{gmeshCase: gmeshCase{name: "control plane not running", args: []string{"bootstrap", "--state-dir", gone, "--node-id", "n"},
			wantErr: `^warning: the control plane recorded in .* \(pid 1073741824\) is not running; the bootstrap names its address 127\.0\.0\.1:15011`},
			wantURI: "127.0.0.1:15011"},
		{gmeshCase: gmeshCase{name: "no node id", args: []string{"bootstrap", "--state-dir", live}, wantCode: 1,
			wantErr: `^gmesh: bootstrap: --node-id is required`}},
		{gmeshCase: gmeshCase{name: "no control plane", args: []string{"bootstrap", "--state-dir", none, "--node-id", "n"}, wantCode: 1,
			wantErr: `^gmesh: bootstrap: no control plane has run in state directory .*none; start one with ` + "`gmesh up --state-dir .*none`" + `, or give --xds-server HOST:PORT$`}},
		{gmeshCase: gmeshCase{name: "bad address", args: []string{"bootstrap", "--xds-server", "localhost", "--node-id", "n"}, wantCode: 1,
			wantErr: `^gmesh: bootstrap: server uri "localhost": want host:port`}},
		{gmeshCase: gmeshCase{name: "bad metadata", args: []string{"bootstrap", "--state-dir", live, "--node-id", "n", "--metadata", "novalue"}, wantCode: 1,
			wantErr: `^gmesh: bootstrap: --metadata "novalue": want KEY=VALUE$`}},
		{gmeshCase: gmeshCase{name: "--cert without --ca", args: []string{"bootstrap", "--state-dir", live, "--node-id", "n", "--cert", certFile, "--key", certFile}, wantCode: 1,
			wantErr: `^gmesh: bootstrap: --cert, --key and --ca go together`}},
		{gmeshCase: gmeshCase{name: "--cert missing", args: []string{"bootstrap", "--state-dir", live, "--node-id", "n", "--cert", filepath.Join(none, "c.pem"), "--key", certFile, "--ca", certFile}, wantCode: 1,
			wantErr: `^gmesh: bootstrap: --cert: stat .*none/c.pem: no such file or directory$`}},
		{gmeshCase: gmeshCase{name: "to a file", args: []string{"bootstrap", "--state-dir", live, "--node-id", "n", "-o", out}, wantOut: "^$",
			wantErr: `^wrote .*bootstrap.json; start the client with GRPC_XDS_BOOTSTRAP=.*bootstrap.json$`}},
		{gmeshCase: gmeshCase{name: "file exists", args: []string{"bootstrap", "--state-dir", live, "--node-id", "n2", "-o", out}, wantCode: 1,
			wantErr: `^gmesh: bootstrap: .*bootstrap.json exists; use --force to overwrite it$`}},
		{gmeshCase: gmeshCase{name: "--force", args: []string{"bootstrap", "--state-dir", live, "--node-id", "n3", "-o", out, "--force"}}},
		{gmeshCase: gmeshCase{name: "a missing directory", args: []string{"bootstrap", "--state-dir", live, "--node-id", "n", "-o", filepath.Join(none, "b.json")}, wantCode: 1,
			wantErr: `^gmesh: bootstrap: open .*none/b.json: no such file or directory$`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := run(tt.args...)
			tt.check(t, code, stdout, stderr)
			if tt.wantURI == "" {
				return
			}
			var got struct {
				XDSServers []struct {
					ServerURI string `json:"server_uri"`
				} `json:"xds_servers"`
				Node map[string]any `json:"node"`
			}
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
			}
			if len(got.XDSServers) != 1 || got.XDSServers[0].ServerURI != tt.wantURI {
				t.Errorf("xds_servers = %+v, want one with server_uri %s", got.XDSServers, tt.wantURI)
			}
			if tt.wantNode != nil && !jsonEqual(got.Node, tt.wantNode) {
				t.Errorf("node = %v, want %v", got.Node, tt.wantNode)
			}
			if _, err := xds.NewXDSResolverWithConfigForTesting([]byte(stdout)); err != nil {
				t.Errorf("grpc-go rejects the bootstrap: %v", err)
			}
		})
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`"id": "n3"`).Match(b) {
		t.Errorf("--force did not overwrite %s:\n%s", out, b)
	}
	if _, err := os.Stat(none); !os.IsNotExist(err) {
		t.Errorf("bootstrap created the state directory %s (stat: %v); it must create nothing", none, err)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// TestBootstrapTLS: --cert, --key and --ca give the bootstrap A65 "tls"
// channel_creds and the file_watcher provider with the files, absolute.
func TestBootstrapTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	for _, f := range []string{"id.pem", "ca.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("pem"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	var stdout, stderr bytes.Buffer
	code := cli.Main(ctx, cli.IO{In: strings.NewReader(""), Out: &stdout, Err: &stderr}, []string{"bootstrap", "--xds-server", "127.0.0.1:15010",
		"--node-id", "mesh/echo/virtualNode/billing/h-1", "--cert", "id.pem", "--key", "id.pem", "--ca", "ca.pem", "--cert-refresh", "30s"})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var got struct {
		Servers []struct {
			Creds []map[string]any `json:"channel_creds"`
		} `json:"xds_servers"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{{"type": "tls", "config": map[string]any{
		"certificate_file": filepath.Join(dir, "id.pem"), "private_key_file": filepath.Join(dir, "id.pem"),
		"ca_certificate_file": filepath.Join(dir, "ca.pem"), "refresh_interval": "30s",
	}}}
	if len(got.Servers) != 1 || !reflect.DeepEqual(got.Servers[0].Creds, want) {
		t.Errorf("channel_creds %v, want %v", got.Servers, want)
	}
	if _, err := xds.NewXDSResolverWithConfigForTesting(stdout.Bytes()); err != nil {
		t.Errorf("grpc-go rejects the bootstrap: %v", err)
	}
}
