// Command banger-node is banger's node agent on a Kubernetes cluster, run
// by the banger-node DaemonSet (deploy/kubernetes/node.yaml): a kubelet
// device plugin that makes /dev/kvm the resource banger.dev/kvm where it
// is usable, so launcher Pods of Sandboxes with accel kvm get it without
// privileges. See internal/kube/deviceplugin.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/bangervm/banger/internal/kube/deviceplugin"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "banger-node:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("device-plugin-dir", "", "the kubelet's device-plugins directory (default /var/lib/kubelet/device-plugins)")
	units := flag.Int("kvm-units", deviceplugin.DefaultUnits, "how many Pods on the node may hold banger.dev/kvm (and banger.dev/tun) at once: they share the device")
	tun := flag.Bool("tun", false, "also serve /dev/net/tun as banger.dev/tun")
	flag.Parse()
	if flag.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *units <= 0 {
		return fmt.Errorf("--kvm-units must be positive")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	devices := []deviceplugin.Device{deviceplugin.KVM()}
	if *tun {
		devices = append(devices, deviceplugin.TUN())
	}
	var g errgroup.Group
	for _, d := range devices {
		d.Units = *units
		p := &deviceplugin.Plugin{Device: d, Dir: *dir, Log: log}
		g.Go(func() error { return p.Run(ctx) })
	}
	return g.Wait()
}
