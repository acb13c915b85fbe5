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

// The version of this server. The demo flow edits it to "1.0" and deploys.
const defaultVersion = "0.9"

// version can be stamped at build time: -ldflags "-X main.version=1.0".
var version = defaultVersion

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
		fmt.Fprintln(stdout, version)
		return 0
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg := opts.Config
	cfg.Version = version
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
