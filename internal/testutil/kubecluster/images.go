package kubecluster

import (
	"fmt"
	"os"
	"path"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/bangervm/banger/internal/kube/images"
)

// The images every test cluster has, made on the machine from Debian's
// static busybox: the cluster pulls nothing (pods use imagePullPolicy
// Never or IfNotPresent).
const (
	// PauseImage is containerd's sandbox image. busybox sleeping stands in
	// for the pause program: the sandbox's PID 1 only has to exist, and
	// containerd stops sandboxes with SIGKILL.
	PauseImage = "registry.k8s.io/pause:3.10"
	// BusyboxImage has /bin/busybox and the usual applet links (sh,
	// echo, cat, sleep, ...).
	BusyboxImage = "banger.test/busybox:1"
)

var busyboxApplets = []string{"sh", "echo", "cat", "sleep", "true", "false", "ls", "env", "id", "hostname", "wc", "head", "tail", "grep", "test", "["}

// busyboxLayer is a tar of /bin/busybox (the file at src) and its applet
// links.
func busyboxLayer(src string) ([]byte, error) {
	if _, err := os.Stat(src); err != nil {
		return nil, fmt.Errorf("busybox for the test images: %w (apt-get install busybox-static)", err)
	}
	entries := []images.Entry{{Path: "bin/busybox", Src: src}, {Path: "tmp", Dir: true, Mode: 0o1777}}
	for _, a := range busyboxApplets {
		entries = append(entries, images.Entry{Path: path.Join("bin", a), Link: "busybox"})
	}
	return images.Layer(entries)
}

// writeImages writes the pause and busybox images as one docker-save tar
// (what ctr images import reads) at dst, from the busybox binary at src.
func writeImages(dst, src string) error {
	layer, err := busyboxLayer(src)
	if err != nil {
		return err
	}
	env := []string{"PATH=/bin"}
	pause, err := images.Image(layer, v1.Config{Entrypoint: []string{"/bin/busybox", "sleep", "2147483647"}, Env: env})
	if err != nil {
		return err
	}
	bb, err := images.Image(layer, v1.Config{Cmd: []string{"sh"}, Env: env})
	if err != nil {
		return err
	}
	if err := images.WriteTar(dst, map[string]v1.Image{PauseImage: pause, BusyboxImage: bb}); err != nil {
		return fmt.Errorf("write test images: %w", err)
	}
	return nil
}
