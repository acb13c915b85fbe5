package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/gmesh-dev/gmesh/internal/load"
)

func newLoadCmd(_ *globals, stdio IO) *cobra.Command {
	cfg := load.Config{}
	var failOnError bool
	cmd := &cobra.Command{
		Use:   "load URL",
		Short: "Send a bounded load to URL and count replies per version and failures per second (loopback only unless --allow-remote)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.URL = args[0]
			if err := load.CheckTarget(cfg.URL, cfg.AllowRemote); err != nil {
				return err
			}
			cfg.Every = func(r load.Report) { fmt.Fprintln(stdio.Out, load.FormatReport(r)) }
			res, err := load.Run(cmd.Context(), cfg)
			if res != nil {
				if perr := res.Print(stdio.Out); perr != nil && err == nil {
					err = perr
				}
			}
			if err != nil && (res == nil || !res.Interrupted) {
				return err
			}
			if failOnError && res.Failed > 0 {
				return exitError{code: 2}
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&cfg.RPS, "rps", 0, "requests per second, open loop (0: as fast as --concurrency allows)")
	cmd.Flags().DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to run (at most 1h)")
	cmd.Flags().IntVar(&cfg.Concurrency, "concurrency", load.DefaultConcurrency, "requests in flight at most")
	cmd.Flags().Int64Var(&cfg.MaxRequests, "max-requests", load.DefaultMaxRequests, "stop after this many requests")
	cmd.Flags().DurationVar(&cfg.Timeout, "timeout", load.DefaultTimeout, "per-request timeout")
	cmd.Flags().BoolVar(&cfg.AllowRemote, "allow-remote", false, "allow a target that is not on this machine's loopback")
	cmd.Flags().StringVar(&cfg.VersionHeader, "version-header", "", "count versions by this response header (e.g. Echo-Client-Version) instead of the reply's text")
	cmd.Flags().BoolVar(&failOnError, "fail-on-error", false, "exit 2 if any request failed")
	return cmd
}
