package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gmesh-dev/gmesh/internal/statedir"
	"github.com/gmesh-dev/gmesh/internal/xds/bootstrap"
)

type bootstrapOptions struct {
	xdsServer string
	nodeID    string
	cluster   string
	region    string
	zone      string
	subZone   string
	metadata  []string
	output    string
	force     bool
	// The client's certificate files, for a mesh with TLS on.
	cert, key, ca string
	refresh       time.Duration
}

func newBootstrapCmd(g *globals, stdio IO) *cobra.Command {
	o := &bootstrapOptions{}
	cmd := &cobra.Command{
		Use:   "bootstrap --node-id ID [-o FILE]",
		Short: "Print the xDS bootstrap for a gRPC client gmesh did not start (any language)",
		Long: `Print the xDS bootstrap JSON a proxyless gRPC client (grpc-go, grpc-java,
grpc-js with @grpc/grpc-js-xds, gRPC C++/Python) needs to join the mesh.
Give it to the client with GRPC_XDS_BOOTSTRAP=FILE or
GRPC_XDS_BOOTSTRAP_CONFIG='<the JSON>' and dial xds:///<virtual service>,
e.g. xds:///echo-server.echo.local. See docs/xds-clients.md.

The node id names the client to the control plane: ` + "`gmesh status`" + ` lists it
under xDS clients, and a rollout waits for every connected client to apply
each step. It does not select a virtual node: every client sees every
virtual service of the mesh. Give each process its own id, e.g.
mesh/echo/virtualNode/billing/<host>-<pid>.

In a mesh with TLS on, the control plane serves xDS only to clients that
present a workload certificate from the mesh CA: give --cert, --key and
--ca, and a node id of the form mesh/MESH/virtualNode/NODE[/...] naming the
virtual node of the certificate's SPIFFE ID (spiffe://MESH.gmesh.local/vn/NODE).
The bootstrap then has "tls" channel_creds (gRFC A65) with those files,
which the client rereads every --cert-refresh. Otherwise the stream is
refused (UNAUTHENTICATED or PERMISSION_DENIED) and the control plane logs
"xds client refused" with the node id and the certificate's ID.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBootstrap(g, o, stdio)
		},
	}
	cmd.Flags().StringVar(&o.xdsServer, "xds-server", "", "the control plane's xDS address host:port (default: --server, else the control plane recorded in the state directory)")
	cmd.Flags().StringVar(&o.nodeID, "node-id", "", "node.id of the client (required; one per process)")
	cmd.Flags().StringVar(&o.cluster, "cluster", "", "node.cluster of the client (optional)")
	cmd.Flags().StringVar(&o.region, "region", bootstrap.LocalRegion, "node.locality.region")
	cmd.Flags().StringVar(&o.zone, "zone", bootstrap.LocalZone, "node.locality.zone")
	cmd.Flags().StringVar(&o.subZone, "sub-zone", "", "node.locality.sub_zone")
	cmd.Flags().StringArrayVar(&o.metadata, "metadata", nil, "KEY=VALUE of node.metadata (repeatable)")
	cmd.Flags().StringVar(&o.cert, "cert", "", "PEM certificate file of the client's workload certificate from the mesh CA (a mesh with TLS on: the control plane requires it on xDS); with --key and --ca")
	cmd.Flags().StringVar(&o.key, "key", "", "PEM private key file of --cert (may be the same file)")
	cmd.Flags().StringVar(&o.ca, "ca", "", "PEM file of the mesh CA's trust bundle (STATE/ca/ca.crt for gmesh's own CA)")
	cmd.Flags().DurationVar(&o.refresh, "cert-refresh", 0, "how often the client rereads the files (0: grpc-go's default, 10m)")
	cmd.Flags().StringVarP(&o.output, "output", "o", "-", "write the bootstrap to this file (\"-\": standard output)")
	cmd.Flags().BoolVar(&o.force, "force", false, "overwrite the -o file if it exists")
	return cmd
}

func runBootstrap(g *globals, o *bootstrapOptions, stdio IO) error {
	if o.nodeID == "" {
		return errors.New("bootstrap: --node-id is required: the id the control plane will know this client by, one per process (e.g. mesh/echo/virtualNode/billing/host-1)")
	}
	meta := map[string]string{}
	for _, kv := range o.metadata {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("bootstrap: --metadata %q: want KEY=VALUE", kv)
		}
		meta[k] = v
	}
	if len(meta) == 0 {
		meta = nil
	}
	var tlsCfg *bootstrap.TLS
	switch {
	case o.cert == "" && o.key == "" && o.ca == "":
	case o.cert == "" || o.key == "" || o.ca == "":
		return errors.New("bootstrap: --cert, --key and --ca go together: the client's certificate, its key (may be the same file) and the mesh CA's bundle")
	default:
		for _, f := range []struct{ flag, path string }{{"--cert", o.cert}, {"--key", o.key}, {"--ca", o.ca}} {
			abs, err := filepath.Abs(f.path)
			if err != nil {
				return fmt.Errorf("bootstrap: %s %s: %w", f.flag, f.path, err)
			}
			if _, err := os.Stat(abs); err != nil {
				return fmt.Errorf("bootstrap: %s: %w", f.flag, err)
			}
		}
		abs := func(p string) string { a, _ := filepath.Abs(p); return a }
		tlsCfg = &bootstrap.TLS{CertificateFile: abs(o.cert), PrivateKeyFile: abs(o.key), CACertificateFile: abs(o.ca),
			RefreshInterval: o.refresh, Channel: true}
	}
	addr, err := xdsAddr(g, o, stdio)
	if err != nil {
		return err
	}
	b, err := bootstrap.Config{
		TLS:       tlsCfg,
		ServerURI: addr,
		NodeID:    o.nodeID,
		Cluster:   o.cluster,
		Locality:  bootstrap.Locality{Region: o.region, Zone: o.zone, SubZone: o.subZone},
		Metadata:  meta,
	}.JSON()
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if o.output == "-" || o.output == "" {
		_, err := stdio.Out.Write(b)
		return err
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if o.force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(o.output, flags, 0o644)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("bootstrap: %s exists; use --force to overwrite it", o.output)
	}
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("bootstrap: write %s: %w", o.output, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("bootstrap: write %s: %w", o.output, err)
	}
	fmt.Fprintf(stdio.Err, "wrote %s; start the client with GRPC_XDS_BOOTSTRAP=%s\n", o.output, o.output)
	return nil
}

// xdsAddr is --xds-server, else --server, else the address of the control
// plane recorded in the state directory (read without creating anything).
// A recorded control plane whose process is gone gets a warning: the
// bootstrap still names its address, which a restart in that state
// directory reuses.
func xdsAddr(g *globals, o *bootstrapOptions, stdio IO) (string, error) {
	if o.xdsServer != "" {
		return o.xdsServer, nil
	}
	if g.server != "" {
		return g.server, nil
	}
	path := g.stateDir
	if path == "" {
		path = statedir.Default
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("bootstrap: state directory %s: %w", path, err)
	}
	cp, err := statedir.Dir{Path: abs}.ReadControlPlane()
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("bootstrap: no control plane has run in state directory %s; start one with `gmesh up --state-dir %s`, or give --xds-server HOST:PORT", abs, path)
	}
	if err != nil {
		return "", fmt.Errorf("bootstrap: %w", err)
	}
	if cp.Addr == "" {
		return "", fmt.Errorf("bootstrap: %s records no control plane address; give --xds-server HOST:PORT", abs)
	}
	if cp.PID > 0 && !pidAlive(cp.PID) {
		fmt.Fprintf(stdio.Err, "warning: the control plane recorded in %s (pid %d) is not running; the bootstrap names its address %s, which it reuses when started again there\n", abs, cp.PID, cp.Addr)
	}
	return cp.Addr, nil
}

// pidAlive reports whether a process with pid exists.
func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
