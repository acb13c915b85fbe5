// Package cli implements the gmesh command line. Commands take their
// stdin/stdout/stderr from IO so tests run them in-process.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/mesh"
	"github.com/gmesh-dev/gmesh/internal/statedir"
)

// IO is where a command reads and writes.
type IO struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// globals are the flags every command has.
type globals struct {
	stateDir string
	server   string
	mesh     string
	// stateDirSet: --state-dir was given, so the user named this mesh.
	stateDirSet bool
	// kubeClients makes the clients of a command run against a cluster
	// (--kubernetes, --kubeconfig); nil: newKubeClients. Tests set it.
	kubeClients func(kubeconfig string) (*kubeClients, error)
}

// stateDirFlag is what a printed hint must carry to reach this state
// directory from anywhere: "" for the default ./.gmesh, else
// " --state-dir ABS".
func (g *globals) stateDirFlag() string {
	if !g.stateDirSet {
		return ""
	}
	p := g.stateDir
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	return " --state-dir " + shellQuote(p)
}

// targetFlags is stateDirFlag plus --server and --mesh when given: what a
// hint to run another command against the same mesh must carry.
func (g *globals) targetFlags() string {
	s := g.stateDirFlag()
	if g.server != "" {
		s += " --server " + shellQuote(g.server)
	}
	if g.mesh != "" {
		s += " --mesh " + shellQuote(g.mesh)
	}
	return s
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./@%+=:,-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// exitError carries an exit code without printing more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// Main runs gmesh with args and returns the process exit code.
func Main(ctx context.Context, stdio IO, args []string) int {
	return run(ctx, New(stdio), stdio, args)
}

func run(ctx context.Context, root *cobra.Command, stdio IO, args []string) int {
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintf(stdio.Err, "gmesh: %v\n", err)
	return 1
}

// New builds the command tree.
func New(stdio IO) *cobra.Command {
	return newRoot(stdio, &globals{})
}

func newRoot(stdio IO, g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "gmesh",
		Short:         "gmesh: a gRPC service mesh with zero-downtime progressive delivery",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Runs for every subcommand as long as none defines its own
		// PersistentPreRun (cobra runs only the nearest one).
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			g.stateDirSet = cmd.Flags().Changed("state-dir")
		},
	}
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	root.PersistentFlags().StringVar(&g.stateDir, "state-dir", statedir.Default, "state directory of the mesh")
	root.PersistentFlags().StringVar(&g.server, "server", "", "control plane address (default: the one recorded in the state directory)")
	root.PersistentFlags().StringVar(&g.mesh, "mesh", "", "mesh of the resources (default: the only one)")
	root.AddCommand(
		newControlPlaneCmd(g, stdio),
		newApplyCmd(g, stdio),
		newGetCmd(g, stdio),
		newDeleteCmd(g, stdio),
		newStatusCmd(g, stdio),
		newLogsCmd(g, stdio),
		newUpCmd(g, stdio),
		newDownCmd(g, stdio),
		newInitCmd(g, stdio),
		newDeployCmd(g, stdio),
		newRolloutCmd(g, stdio),
		newRollbackCmd(g, stdio),
		newLoadCmd(g, stdio),
		newBootstrapCmd(g, stdio),
		newGatewayCmd(stdio),
	)
	return root
}

// client connects to the control plane named by --server or recorded in
// the state directory. It makes nothing: a missing state directory stays
// missing.
func (g *globals) client() (*controlplane.Client, error) {
	addr := g.server
	token := ""
	dir, err := statedir.Lookup(g.stateDir)
	if errors.Is(err, fs.ErrNotExist) && addr == "" {
		return nil, fmt.Errorf("no control plane has run in state directory %s (it does not exist); start one with `gmesh up%s` or `gmesh controlplane%s`, or give --server", dir.Path, g.stateDirFlag(), g.stateDirFlag())
	}
	if err == nil {
		if addr == "" {
			cp, rerr := dir.ReadControlPlane()
			if errors.Is(rerr, fs.ErrNotExist) {
				return nil, fmt.Errorf("no control plane has run in state directory %s; start one with `gmesh up%s` or `gmesh controlplane%s`, or give --server", dir.Path, g.stateDirFlag(), g.stateDirFlag())
			}
			if rerr != nil {
				return nil, rerr
			}
			addr = cp.Addr
		}
		if !controlplane.IsLoopback(addr) {
			token, err = dir.Token()
			if err != nil {
				return nil, err
			}
		}
	} else if addr == "" {
		return nil, err
	} else if !controlplane.IsLoopback(addr) {
		// A control plane off loopback wants the token kept in its state
		// directory.
		return nil, fmt.Errorf("the admin API token of %s is read from the state directory: %w", addr, err)
	}
	return controlplane.Dial(addr, token)
}

// meshFor returns the mesh a command acts on: --mesh, or the only one.
func (g *globals) meshFor(ctx context.Context, c *controlplane.Client) (string, error) {
	if g.mesh != "" {
		return g.mesh, nil
	}
	ms, err := c.List(ctx, mesh.KindMesh, "")
	if err != nil {
		return "", err
	}
	switch len(ms) {
	case 0:
		return "", errors.New("no mesh exists yet; apply one or run `gmesh up`")
	case 1:
		return ms[0].Metadata.Name, nil
	}
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Metadata.Name
	}
	return "", fmt.Errorf("several meshes exist (%s); say which with --mesh", strings.Join(names, ", "))
}

// clientInMesh connects and resolves the mesh the command acts on; the
// caller closes the client.
func (g *globals) clientInMesh(ctx context.Context) (*controlplane.Client, string, error) {
	c, err := g.client()
	if err != nil {
		return nil, "", err
	}
	meshName, err := g.meshFor(ctx, c)
	if err != nil {
		c.Close()
		return nil, "", err
	}
	return c, meshName, nil
}
