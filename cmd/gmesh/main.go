// Command gmesh is the one CLI of gmesh: up, down, apply, get, delete,
// status, logs, deploy, rollout, rollback, load, controlplane and gateway.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/gmesh-dev/gmesh/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, cli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}
