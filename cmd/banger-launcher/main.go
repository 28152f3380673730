// Command banger-launcher runs one banger VM inside a Kubernetes Pod (see
// internal/kube/launcher): `run` is the container's command, `api` joins
// stdin and stdout to the launcher's API (reached through the Pod's exec),
// `ready` is the readiness probe.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bangervm/banger/internal/kube/images"
	"github.com/bangervm/banger/internal/kube/launcher"
)

const usage = "usage: banger-launcher run|api|ready"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = serve()
	case "api":
		err = launcher.API(context.Background(), launcher.Socket, os.Stdin, os.Stdout)
	case "ready":
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = launcher.Ready(ctx, launcher.Socket, os.Getenv(launcher.EnvName))
	default:
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "banger-launcher:", err)
		if args[0] == "run" {
			terminationMessage(err)
		}
		return 1
	}
	return 0
}

// terminationMessage leaves err where the kubelet reads a container's last
// words (the Pod's default terminationMessagePath): the controller copies
// it into the Sandbox's status, so `kubectl get sbx` and the CLI say why
// the VM did not run. Outside a Pod the file is not there and nothing is
// written.
func terminationMessage(err error) {
	const path = "/dev/termination-log"
	if f, ferr := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0); ferr == nil {
		fmt.Fprint(f, err)
		f.Close()
	}
}

func serve() error {
	name, spec, err := launcher.FromEnv()
	if err != nil {
		return err
	}
	// The container's log is the launcher's (and bangerd's) log.
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	return launcher.Run(ctx, launcher.Config{Name: name, Spec: spec, KernelDir: images.KernelDir, Log: log})
}
