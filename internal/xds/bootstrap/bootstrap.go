// Package bootstrap writes the xDS bootstrap a proxyless gRPC client needs
// to reach gmesh's control plane. It is the one place that does: the tasks
// `gmesh up` starts get theirs from it, and so does `gmesh bootstrap`, which
// prints one for a client in any language.
//
// The bootstrap holds what every gRPC xDS implementation asks of it:
//
//   - xds_servers[0].server_uri: the control plane's host:port (it serves
//     the admin API and ADS on one port).
//   - xds_servers[0].channel_creds: [{"type": "insecure"}]; every
//     implementation requires at least one type it supports, and the
//     control plane speaks plaintext to meshes without TLS. With TLS.Channel
//     (a mesh with TLS on): [{"type": "tls", "config": {...}}] (gRFC A65)
//     with the workload's certificate files, which the control plane then
//     requires.
//   - xds_servers[0].server_features: ["xds_v3"]. gmesh serves xDS v3 only;
//     gRPC releases that spoke both v2 and v3 (C core 1.36-1.50, Java
//     1.36-1.52, Go 1.36-1.53, grpc-js-xds 1.4-1.7) use v3 only when the
//     server lists this feature. Newer releases ignore features they do not
//     know.
//   - node.id: what the control plane sees; required by all.
//   - node.locality: grpc-js-xds refuses a bootstrap without it (its
//     fields may be empty). gmesh puts every endpoint in one locality,
//     region "gmesh" zone "local", and clients default to it too.
//   - node.cluster and node.metadata: optional everywhere.
//   - certificate_providers and server_listener_resource_name_template, only
//     when the client has a workload certificate (Config.TLS): the
//     file_watcher provider instance CertProviderInstance (gRFC A29), which
//     the translation's TLS contexts name, and the name an xDS-enabled gRPC
//     server asks for its listener by (ServerListenerName).
//
// grpc-go, grpc-java, grpc-js-xds and the C core (C++, Python, Ruby, PHP)
// read GRPC_XDS_BOOTSTRAP (a file) or, when it is unset,
// GRPC_XDS_BOOTSTRAP_CONFIG (the JSON itself), once, when their xDS client
// is first created. grpc-go reads them when its xds package initialises, so
// the variable must be in the process's environment when it starts: setting
// it with os.Setenv inside main is too late. A test that needs several node
// ids in one process passes JSON's output to
// google.golang.org/grpc/xds.NewXDSResolverWithConfigForTesting and dials
// with grpc.WithResolvers.
package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// EnvConfig is the environment variable that carries the bootstrap JSON.
const EnvConfig = "GRPC_XDS_BOOTSTRAP_CONFIG"

// EnvFile is the environment variable that names a bootstrap file. Every
// gRPC implementation prefers it to EnvConfig when both are set.
const EnvFile = "GRPC_XDS_BOOTSTRAP"

// The locality of the machine gmesh runs tasks on: the control plane puts
// every endpoint in it, and a client's node.locality defaults to it.
const (
	LocalRegion = "gmesh"
	LocalZone   = "local"
)

// ServerFeatureV3 tells gRPC releases that also spoke xDS v2 to speak v3.
const ServerFeatureV3 = "xds_v3"

// Locality is where a client runs (node.locality).
type Locality struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	SubZone string `json:"sub_zone,omitempty"`
}

// Config is one client's bootstrap.
type Config struct {
	// ServerURI is the control plane's host:port.
	ServerURI string
	// NodeID is the client's node.id.
	NodeID string
	// Cluster is node.cluster ("" leaves it out).
	Cluster string
	// Locality is node.locality; the zero value means LocalRegion and
	// LocalZone.
	Locality Locality
	// Metadata is node.metadata (nil leaves it out).
	Metadata map[string]string
	// TLS, when set, adds the certificate provider and the server listener
	// name template; nil leaves both out (plaintext only).
	TLS *TLS
}

// TLS names a workload's certificate files for grpc-go's file_watcher
// certificate provider.
type TLS struct {
	// CertificateFile and PrivateKeyFile may name the same file holding
	// both (internal/pki writes it so; grpc-go pairs what it reads with
	// tls.X509KeyPair, which skips the blocks it does not want).
	CertificateFile   string
	PrivateKeyFile    string
	CACertificateFile string
	// RefreshInterval is how often the provider rereads the files (grpc-go's
	// default, 10 minutes, when 0).
	RefreshInterval time.Duration
	// Channel also secures the xDS channel with these files: channel_creds
	// [{"type": "tls", "config": {...}}] (gRFC A65) instead of "insecure",
	// so the client presents its certificate to the control plane and
	// checks the control plane's against the CA file (and its host name:
	// the server_uri's host must be in the control plane's certificate).
	// grpc-go rereads the files at refresh_interval, as for the provider.
	Channel bool
}

// CertProviderInstance is the name of the certificate provider instance in
// the bootstrap; the TLS contexts of the xDS resources refer to it.
const CertProviderInstance = "gmesh"

// ServerListenerTemplate is server_listener_resource_name_template: an
// xDS-enabled gRPC server listening on host:port asks for the listener
// ServerListenerName(host:port).
const ServerListenerTemplate = "grpc/server?xds.resource.listening_address=%s"

// ServerListenerName is the listener resource name a server listening on
// addr (host:port, as net.JoinHostPort writes it) asks for.
func ServerListenerName(addr string) string {
	return strings.Replace(ServerListenerTemplate, "%s", addr, 1)
}

type file struct {
	XDSServers                         []server                `json:"xds_servers"`
	Node                               node                    `json:"node"`
	CertificateProviders               map[string]certProvider `json:"certificate_providers,omitempty"`
	ServerListenerResourceNameTemplate string                  `json:"server_listener_resource_name_template,omitempty"`
}

type certProvider struct {
	PluginName string      `json:"plugin_name"`
	Config     fileWatcher `json:"config"`
}

type fileWatcher struct {
	CertificateFile   string `json:"certificate_file"`
	PrivateKeyFile    string `json:"private_key_file"`
	CACertificateFile string `json:"ca_certificate_file"`
	RefreshInterval   string `json:"refresh_interval,omitempty"`
}

type server struct {
	ServerURI      string        `json:"server_uri"`
	ChannelCreds   []channelCred `json:"channel_creds"`
	ServerFeatures []string      `json:"server_features"`
}

type channelCred struct {
	Type   string       `json:"type"`
	Config *fileWatcher `json:"config,omitempty"`
}

type node struct {
	ID       string            `json:"id"`
	Cluster  string            `json:"cluster,omitempty"`
	Locality Locality          `json:"locality"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// JSON returns the bootstrap, indented, without a trailing newline.
func (c Config) JSON() ([]byte, error) {
	if err := checkServerURI(c.ServerURI); err != nil {
		return nil, err
	}
	if strings.TrimSpace(c.NodeID) == "" {
		return nil, errors.New("bootstrap: empty node id")
	}
	loc := c.Locality
	if loc == (Locality{}) {
		loc = Locality{Region: LocalRegion, Zone: LocalZone}
	}
	f := file{
		XDSServers: []server{{
			ServerURI:      c.ServerURI,
			ChannelCreds:   []channelCred{{Type: "insecure"}},
			ServerFeatures: []string{ServerFeatureV3},
		}},
		Node: node{ID: c.NodeID, Cluster: c.Cluster, Locality: loc, Metadata: c.Metadata},
	}
	if t := c.TLS; t != nil {
		if t.CertificateFile == "" || t.PrivateKeyFile == "" || t.CACertificateFile == "" {
			return nil, errors.New("bootstrap: tls needs a certificate file, a private key file and a CA certificate file")
		}
		if t.RefreshInterval < 0 {
			return nil, fmt.Errorf("bootstrap: tls refresh interval %s is negative", t.RefreshInterval)
		}
		fw := fileWatcher{CertificateFile: t.CertificateFile, PrivateKeyFile: t.PrivateKeyFile, CACertificateFile: t.CACertificateFile}
		if t.RefreshInterval > 0 {
			// A google.protobuf.Duration in JSON: seconds with an "s".
			fw.RefreshInterval = strconv.FormatFloat(t.RefreshInterval.Seconds(), 'f', -1, 64) + "s"
		}
		f.CertificateProviders = map[string]certProvider{CertProviderInstance: {PluginName: "file_watcher", Config: fw}}
		if t.Channel {
			// A65: the "tls" channel credentials take the file_watcher
			// provider's config.
			cfg := fw
			f.XDSServers[0].ChannelCreds = []channelCred{{Type: "tls", Config: &cfg}}
		}
		f.ServerListenerResourceNameTemplate = ServerListenerTemplate
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return b, nil
}

// checkServerURI accepts host:port with a port in 1..65535.
func checkServerURI(uri string) error {
	if uri == "" {
		return errors.New("bootstrap: empty server uri")
	}
	host, port, err := net.SplitHostPort(uri)
	if err != nil {
		return fmt.Errorf("bootstrap: server uri %q: want host:port: %w", uri, err)
	}
	if host == "" {
		return fmt.Errorf("bootstrap: server uri %q: empty host", uri)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("bootstrap: server uri %q: port %q is not in 1..65535", uri, port)
	}
	return nil
}

// JSON returns the bootstrap that reaches the control plane at serverURI
// (host:port) over plaintext and identifies the client as nodeID in the
// local locality, with meta as node metadata (may be nil).
func JSON(serverURI, nodeID string, meta map[string]string) ([]byte, error) {
	return Config{ServerURI: serverURI, NodeID: nodeID, Metadata: meta}.JSON()
}

// Env returns the environment entry ("GRPC_XDS_BOOTSTRAP_CONFIG=...") that
// gives a child process the bootstrap of JSON.
func Env(serverURI, nodeID string, meta map[string]string) (string, error) {
	b, err := JSON(serverURI, nodeID, meta)
	if err != nil {
		return "", err
	}
	return EnvConfig + "=" + string(b), nil
}
