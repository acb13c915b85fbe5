// Command echo-server is the gRPC echo server of gmesh: it answers
// proto.echo.EchoService/Echo with `Hello, <name>-san! (Said <ip>, Version
// <version>)`, serves grpc.health.v1 and reflection, and drains on SIGTERM.
// Configuration comes from the environment and flags; see docs/echo.md.
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

	"github.com/gmesh-dev/gmesh/internal/echo"
)

// The version of this server. The README's demo (step 3) edits this line
// with sed to say "1.0", then deploys.
const version = "0.9"

// stampedVersion, when set at build time, replaces version:
// go build -ldflags "-X main.stampedVersion=1.0" ./cmd/echo-server.
var stampedVersion string

// serverVersion is the version this build reports and serves.
func serverVersion() string {
	if stampedVersion != "" {
		return stampedVersion
	}
	return version
}

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	opts, err := echo.ParseServerConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "echo-server: %v\n", err)
		return 2
	}
	if opts.ShowVersion {
		fmt.Fprintln(stdout, serverVersion())
		return 0
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg := opts.Config
	cfg.Version = serverVersion()
	cfg.Logger = log
	srv, err := echo.NewServer(cfg)
	if err != nil {
		log.Error("echo-server cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() {
		<-ctx.Done()
		stop() // a second signal kills the process at once
	}()
	if err := srv.Run(ctx); err != nil {
		log.Error("echo-server stopped with an error", "err", err)
		return 1
	}
	return 0
}
