// Package bootstrap writes the xDS bootstrap a proxyless grpc-go client
// needs to reach gmesh's control plane.
//
// grpc-go reads GRPC_XDS_BOOTSTRAP_CONFIG (the JSON itself) or
// GRPC_XDS_BOOTSTRAP (a file) when its xds package initialises, so the
// variable must be in the process's environment when it starts: setting it
// with os.Setenv inside main is too late. A test that needs several node ids
// in one process passes JSON's output to
// google.golang.org/grpc/xds.NewXDSResolverWithConfigForTesting and dials with
// grpc.WithResolvers.
package bootstrap

import (
	"encoding/json"
	"errors"
	"fmt"
)

// EnvConfig is the environment variable that carries the bootstrap JSON.
const EnvConfig = "GRPC_XDS_BOOTSTRAP_CONFIG"

// EnvFile is the environment variable that names a bootstrap file.
const EnvFile = "GRPC_XDS_BOOTSTRAP"

type config struct {
	XDSServers []server `json:"xds_servers"`
	Node       node     `json:"node"`
}

type server struct {
	ServerURI      string        `json:"server_uri"`
	ChannelCreds   []channelCred `json:"channel_creds"`
	ServerFeatures []string      `json:"server_features"`
}

type channelCred struct {
	Type string `json:"type"`
}

type node struct {
	ID       string            `json:"id"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// JSON returns a grpc-go bootstrap that reaches the control plane at
// serverURI (host:port) over plaintext and identifies the client as nodeID,
// with meta as node metadata (may be nil).
func JSON(serverURI, nodeID string, meta map[string]string) ([]byte, error) {
	if serverURI == "" {
		return nil, errors.New("bootstrap: empty server uri")
	}
	if nodeID == "" {
		return nil, errors.New("bootstrap: empty node id")
	}
	b, err := json.MarshalIndent(config{
		XDSServers: []server{{
			ServerURI:      serverURI,
			ChannelCreds:   []channelCred{{Type: "insecure"}},
			ServerFeatures: []string{},
		}},
		Node: node{ID: nodeID, Metadata: meta},
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return b, nil
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
