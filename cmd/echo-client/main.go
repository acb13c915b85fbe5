// Command echo-client is the HTTP front end of the gmesh echo service:
// GET /?name=X calls the echo server over gRPC (host:port directly, or
// xds:///name through the mesh) and answers `Response from the server:
// <message>`. Configuration comes from the environment and flags; see
// docs/echo.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	// Registers the xds:/// resolver and balancers; inert unless the target
	// is xds:///, in which case grpc reads its bootstrap from
	// GRPC_XDS_BOOTSTRAP_CONFIG or GRPC_XDS_BOOTSTRAP.
	_ "google.golang.org/grpc/xds"

	"github.com/gmesh-dev/gmesh/internal/echo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := echo.ParseClientConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "echo-client: %v\n", err)
		return 2
	}
	if cfg.ShowVersion {
		fmt.Fprintln(stdout, cfg.Version)
		return 0
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg.Logger = log
	c, err := echo.NewClient(cfg)
	if err != nil {
		log.Error("echo-client cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the process at once
	}()
	if err := c.Run(ctx); err != nil {
		log.Error("echo-client stopped with an error", "err", err)
		return 1
	}
	return 0
}
