package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/gmesh-dev/gmesh/internal/controlplane"
	"github.com/gmesh-dev/gmesh/internal/statedir"
)

func newControlPlaneCmd(g *globals, stdio IO) *cobra.Command {
	var addr string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Run the control plane (store, registry, health checks, xDS, rollouts, admin API)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := statedir.Open(g.stateDir)
			if err != nil {
				return err
			}
			if addr == "" {
				addr = "127.0.0.1:0"
				if prev, err := dir.ReadControlPlane(); err == nil && prev.Addr != "" {
					addr = prev.Addr // keep the address tasks' bootstraps name
				} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
			token, err := dir.Token()
			if err != nil {
				return err
			}
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			logger := slog.New(slog.NewTextHandler(stdio.Err, &slog.HandlerOptions{Level: level}))
			cp, err := controlplane.New(controlplane.Config{
				StorePath: dir.StorePath(),
				Addr:      addr,
				Token:     token,
				Logger:    logger,
			})
			if err != nil {
				return err
			}
			if err := dir.WriteControlPlane(statedir.ControlPlane{Addr: cp.Addr(), PID: os.Getpid()}); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "Control plane: %s (admin API and xDS), state in %s\n", cp.Addr(), dir.Path)
			return cp.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "", "listen address of the admin API and xDS (default: the address recorded in the state directory, else 127.0.0.1 on a free port); a non-loopback address requires the token")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	return cmd
}
