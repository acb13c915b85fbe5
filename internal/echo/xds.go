package echo

import (
	"encoding/json"
	"os"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
)

// xdsBootstrap is what the echo binaries read of the process's xDS
// bootstrap: whether it names certificate providers (the client then uses
// xDS credentials) and a server listener template (the server then serves
// through grpc-go's xDS server). gmesh writes both only for a mesh with TLS
// on, so a mesh without keeps its plain servers and clients.
type xdsBootstrap struct {
	CertificateProviders               map[string]json.RawMessage `json:"certificate_providers"`
	ServerListenerResourceNameTemplate string                     `json:"server_listener_resource_name_template"`
}

// readXDSBootstrap reads the bootstrap as grpc-go does: the file named by
// GRPC_XDS_BOOTSTRAP, else GRPC_XDS_BOOTSTRAP_CONFIG. A bootstrap that is
// missing, unreadable or not JSON reads as the zero value: the binary then
// behaves as it did before TLS existed, and grpc-go reports the bad
// bootstrap itself when it needs it.
func readXDSBootstrap(getenv func(string) string) xdsBootstrap {
	var b []byte
	if f := getenv(EnvXDSBootstrapFile); f != "" {
		var err error
		if b, err = os.ReadFile(f); err != nil {
			return xdsBootstrap{}
		}
	} else if c := getenv(EnvXDSBootstrapConfig); c != "" {
		b = []byte(c)
	} else {
		return xdsBootstrap{}
	}
	var bs xdsBootstrap
	if err := json.Unmarshal(b, &bs); err != nil {
		return xdsBootstrap{}
	}
	return bs
}

// xdsClientCreds are the credentials of a client whose connections the
// control plane secures: mTLS where a cluster says so, plaintext elsewhere.
func xdsClientCreds() (credentials.TransportCredentials, error) {
	return xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
}

// xdsServerCreds: mTLS where the server's listener resource says so,
// plaintext otherwise.
func xdsServerCreds() (credentials.TransportCredentials, error) {
	return xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
}
