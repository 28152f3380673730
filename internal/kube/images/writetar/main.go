// Command writetar writes banger.dev/launcher:dev,
// banger.dev/controller:dev and banger.dev/node:dev as one docker-save tar
// (make kube-images):
//
//	writetar -bin bin -kernel VMLINUX [-initrd INITRD] -o bin/kube-images.tar
//
// -bin holds static builds of banger-launcher, banger-agent,
// banger-controller and banger-node; the kernel is one banger imported (banger kernel show
// debian-cloud --json names its vmlinux and initrd).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bangervm/banger/internal/kube/images"
)

func main() {
	bin := flag.String("bin", "bin", "directory with banger-launcher, banger-agent, banger-controller and banger-node")
	kernel := flag.String("kernel", "", "the guest kernel (vmlinux) baked into the launcher image")
	initrd := flag.String("initrd", "", "its initramfs, as banger generated it")
	out := flag.String("o", "bin/kube-images.tar", "the tar to write")
	flag.Parse()
	if err := run(*bin, *kernel, *initrd, *out); err != nil {
		fmt.Fprintln(os.Stderr, "writetar:", err)
		os.Exit(1)
	}
}

func run(bin, kernel, initrd, out string) error {
	if kernel == "" {
		return fmt.Errorf("-kernel is required (banger kernel show debian-cloud --json names one)")
	}
	l, err := images.LauncherImage(context.Background(), images.LauncherConfig{
		Launcher: filepath.Join(bin, "banger-launcher"), Agent: filepath.Join(bin, "banger-agent"), Kernel: kernel, Initrd: initrd,
	})
	if err != nil {
		return err
	}
	c, err := images.ControllerImage(filepath.Join(bin, "banger-controller"))
	if err != nil {
		return err
	}
	n, err := images.NodeImage(filepath.Join(bin, "banger-node"))
	if err != nil {
		return err
	}
	return images.WriteTar(out, map[string]v1.Image{images.Launcher: l, images.Controller: c, images.Node: n})
}
