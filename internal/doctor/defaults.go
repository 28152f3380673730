package doctor

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/bangervm/banger/internal/catalog"
)

// checkVMDefaults: the image and kernel a VM gets when a command names
// none (config default_image, default_kernel) exist here, or can be had on
// first use (a catalog name; a reference naming a registry, for an
// image). Sizes are checked with the config itself.
func checkVMDefaults(ctx context.Context, f *facts) Result {
	r := Result{Name: "vm-defaults"}
	if f.ConfigErr != nil {
		r.Status, r.Detail, r.Fix = Skip, "config.toml does not load (see config)", "fix config.toml"
		return r
	}
	if f.Daemon == nil {
		r.Status, r.Detail, r.Fix = Skip, "the daemon is not running (see daemon)", "start it: banger daemon restart"
		return r
	}
	imgs, err := f.Daemon.Images(ctx)
	if err != nil {
		r.Status, r.Detail, r.Fix = Skip, fmt.Sprintf("could not list images: %v", err), "see the daemon check"
		return r
	}
	kernels, err := f.Daemon.Kernels(ctx)
	if err != nil {
		r.Status, r.Detail, r.Fix = Skip, fmt.Sprintf("could not list kernels: %v", err), "see the daemon check"
		return r
	}
	have := func(name string, list []string) bool { return slices.Contains(list, name) }
	var imgNames, kernelNames []string
	for _, i := range imgs {
		imgNames = append(imgNames, i.Name)
	}
	for _, k := range kernels {
		kernelNames = append(kernelNames, k.Name)
	}
	img, kernel := f.Config.DefaultImage, f.Config.DefaultKernel
	var notes, bad []string
	switch {
	case have(img, imgNames):
		notes = append(notes, "image "+img+" is here")
	case isCatalog(catalog.Image, img):
		notes = append(notes, "image "+img+" is built on first use (catalog)")
	case catalog.NamesRegistry(img):
		notes = append(notes, "image "+img+" is pulled on first use")
	default:
		bad = append(bad, fmt.Sprintf("default_image %q is neither an image here, a catalog name (%s) nor a reference naming its registry", img, strings.Join(catalog.ImageNames(), ", ")))
	}
	switch {
	case kernel == "":
		notes = append(notes, "no default kernel (each image's own)")
	case have(kernel, kernelNames):
		notes = append(notes, "kernel "+kernel+" is here")
	case isCatalog(catalog.Kernel, kernel):
		notes = append(notes, "kernel "+kernel+" is pulled on first use (catalog)")
	default:
		bad = append(bad, fmt.Sprintf("default_kernel %q is neither a kernel here nor a catalog name (%s)", kernel, strings.Join(catalog.KernelNames(), ", ")))
	}
	notes = append(notes, fmt.Sprintf("%d vCPU, %d MiB, %s disk", f.Config.VM.VCPU, f.Config.VM.MemoryMB, f.Config.VM.DiskSize))
	if len(bad) > 0 {
		r.Status, r.Detail = Fail, strings.Join(bad, "; ")
		r.Fix = "banger image pull / banger kernel import it, or set default_image and default_kernel in config.toml to ones that exist (banger image list, banger kernel list)"
		return r
	}
	r.Status, r.Detail = Pass, strings.Join(notes, "; ")
	return r
}

func isCatalog(find func(string) (catalog.Entry, bool), name string) bool {
	_, ok := find(name)
	return ok
}
