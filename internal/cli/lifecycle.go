package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/gmesh-dev/gmesh/internal/stack"
	"github.com/gmesh-dev/gmesh/internal/statedir"
)

// upDetached starts `gmesh up` in the background, waits until it is ready
// (or has failed), prints where things are, and returns.
func upDetached(ctx context.Context, g *globals, o *upOptions, stdio IO) error {
	dir, err := statedir.Open(g.stateDir)
	if err != nil {
		return err
	}
	exe, err := selfExe()
	if err != nil {
		return err
	}
	args := []string{"up", "--state-dir", dir.Path, "--task-ip-base", o.ipBase, "--ready-timeout", o.readyFor.String()}
	if o.file != "" {
		f, _ := filepath.Abs(o.file)
		args = append(args, "-f", f)
	}
	if o.listen != "" {
		args = append(args, "--listen", o.listen)
	}
	if o.cpAddr != "" {
		args = append(args, "--controlplane-addr", o.cpAddr)
	}
	if o.dashAddr != "" {
		args = append(args, "--dashboard", o.dashAddr)
	}
	if len(o.dashHosts) > 0 {
		args = append(args, "--dashboard-allowed-hosts", strings.Join(o.dashHosts, ","))
	}
	if o.ca.certFile != "" {
		cert, _ := filepath.Abs(o.ca.certFile)
		key, _ := filepath.Abs(o.ca.keyFile)
		args = append(args, "--ca-cert", cert, "--ca-key", key)
	}
	if o.ca.lifetime != 0 {
		args = append(args, "--cert-lifetime", o.ca.lifetime.String())
	}
	logPath := filepath.Join(dir.LogDir(), "up.log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	_ = os.Remove(dir.UpInfoPath())
	cmd := exec.Command(exe, args...)
	cmd.Args[0] = "gmesh" // not /proc/self/exe, in ps
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start gmesh up in the background: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(o.readyFor + 30*time.Second)
	for time.Now().Before(deadline) {
		if info, err := dir.ReadUpInfo(); err == nil && info.Ready && info.PID == cmd.Process.Pid {
			fmt.Fprintf(stdio.Out, "gmesh up is running in the background (pid %d)\n", info.PID)
			fmt.Fprintf(stdio.Out, "Control plane: %s\n", info.ControlPlane)
			if info.Public != "" {
				fmt.Fprintf(stdio.Out, "Public endpoint: %s\n", info.Public)
			}
			if info.Dashboard != "" {
				fmt.Fprintf(stdio.Out, "Dashboard: %s\n", info.Dashboard)
			}
			fmt.Fprintf(stdio.Out, "State: %s\nLogs: %s\nStop it with: gmesh down%s\n", dir.Path, dir.LogDir(), g.stateDirFlag())
			return nil
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(logPath)
			return fmt.Errorf("gmesh up stopped before it was ready:\n%s", out)
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	return fmt.Errorf("gmesh up was not ready in time; see %s", logPath)
}

func newDownCmd(g *globals, stdio IO) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop a background `gmesh up` (drains and stops every task)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Nothing running is fine for the default ./.gmesh (down is
			// idempotent) and an error for a state directory the user named.
			nothing := func(dir, why string) error {
				if g.stateDirSet {
					return fmt.Errorf("nothing is running in %s%s", dir, why)
				}
				fmt.Fprintf(stdio.Out, "nothing is running in %s%s; a gmesh up started in another directory is stopped from there, or with --state-dir\n", dir, why)
				return nil
			}
			dir, err := statedir.Lookup(g.stateDir)
			if errors.Is(err, fs.ErrNotExist) {
				return nothing(dir.Path, " (no such directory)")
			}
			if err != nil {
				return err
			}
			info, err := dir.ReadUpInfo()
			if errors.Is(err, fs.ErrNotExist) || (err == nil && info.PID == 0) {
				return nothing(dir.Path, "")
			}
			if err != nil {
				return err
			}
			if err := syscall.Kill(info.PID, syscall.SIGTERM); err != nil {
				if errors.Is(err, syscall.ESRCH) {
					_ = os.Remove(dir.UpInfoPath())
					return nothing(dir.Path, " (stale record removed)")
				}
				return fmt.Errorf("stop pid %d: %w", info.PID, err)
			}
			fmt.Fprintf(stdio.Out, "Stopping gmesh up (pid %d)...\n", info.PID)
			deadline := time.Now().Add(timeout)
			for time.Now().Before(deadline) {
				if syscall.Kill(info.PID, 0) != nil {
					fmt.Fprintln(stdio.Out, "Stopped.")
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(100 * time.Millisecond):
				}
			}
			return fmt.Errorf("pid %d did not stop within %s", info.PID, timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for everything to drain and stop")
	return cmd
}

func newInitCmd(_ *globals, stdio IO) *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "init [-o stack.yaml]",
		Short: "Write the built-in echo stack to a file, as a starting point for `gmesh up -f`",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "-" {
				_, err := stdio.Out.Write(stack.Echo)
				return err
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			f, err := os.OpenFile(out, flags, 0o644)
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s exists; use --force to overwrite it", out)
			}
			if err != nil {
				return err
			}
			if _, err := f.Write(stack.Echo); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintf(stdio.Out, "wrote %s; run it with: gmesh up -f %s\n", out, out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "stack.yaml", "file to write (- for stdout)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing file")
	return cmd
}
