// Command banger-launcher runs one banger VM inside a Kubernetes Pod (see
// internal/kube/launcher): `run` is the container's command, `api` joins
// stdin and stdout to the launcher's API (reached through the Pod's exec),
// `ready` is the readiness probe; `tools` and `rootfs` are the Pod's init
// containers that hand the Sandbox's image, as the kubelet pulled it, to
// the launcher (internal/kube/rootfs).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/bangervm/banger/internal/kube/images"
	"github.com/bangervm/banger/internal/kube/launcher"
	"github.com/bangervm/banger/internal/kube/rootfs"
)

const usage = "usage: banger-launcher run|api|ready|tools|rootfs MAX-BYTES"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) != 1 && !(len(args) == 2 && args[0] == "rootfs") {
		fmt.Fprintln(os.Stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "tools":
		err = rootfs.CopySelf(rootfs.Tool)
	case "rootfs":
		err = exportRootFS(args[1])
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
		if args[0] == "run" || args[0] == "rootfs" {
			terminationMessage(err)
		}
		return 1
	}
	return 0
}

// exportRootFS runs in the Sandbox's image (the rootfs init container),
// as this static program: nothing of the image is executed.
func exportRootFS(maxBytes string) error {
	limit, err := strconv.ParseInt(maxBytes, 10, 64)
	if err != nil || limit <= 0 {
		return fmt.Errorf("max bytes %q: want a positive number", maxBytes)
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	cfg := rootfs.Config(os.Environ(), wd)
	limits := rootfs.Limits{Bytes: limit, Files: rootfs.MaxFiles, Skip: []string{strings.TrimPrefix(rootfs.MountDir, "/")}}
	did, st, err := rootfs.Export(context.Background(), "/", rootfs.StatePath, limits, cfg)
	if err != nil {
		return err
	}
	if !did {
		fmt.Println("banger-launcher rootfs: the VM exists on its volume: nothing to export")
		return nil
	}
	fmt.Printf("banger-launcher rootfs: exported %d files, %d bytes; left out the mounts %s\n", st.Files, st.Bytes, strings.Join(st.Skipped, " "))
	return nil
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
