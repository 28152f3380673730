package cli

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/catalog"
)

func newKernelCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kernel",
		Short: "Import, pull and list guest kernels",
	}
	cmd.AddCommand(newKernelImportCmd(f), newKernelPullCmd(f), newKernelListCmd(f), newKernelShowCmd(f), newKernelRmCmd(f))
	return cmd
}

func abs(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	return filepath.Abs(p)
}

func newKernelImportCmd(f *Factory) *cobra.Command {
	var req api.ImportKernelRequest
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "import [KERNEL] --name NAME",
		Short: "Import a vmlinux or bzImage, or a Debian linux-image .deb",
		Long: `Import a guest kernel. From a bzImage banger also extracts the ELF vmlinux
inside it (PVH boot is faster and is what Firecracker wants). With --modules
or --deb, banger generates an initramfs holding just the modules a microVM
needs (virtio-mmio, virtio-blk, virtio-net, virtio-console, vsock, overlay)
and their dependencies.`,
		Example: `  banger kernel import ./vmlinux --name k1
  banger kernel import ./bzImage --initrd ./initrd.img --name k2
  banger kernel import ./vmlinuz --modules /lib/modules/6.1.0-28-cloud-amd64 --name k3
  banger kernel import --deb ./linux-image-6.1.0-28-cloud-amd64_6.1.119-1_amd64.deb --name debian-cloud`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return flagErrorf("kernel import: want at most one kernel file")
			}
			if len(args) == 1 {
				req.Kernel = args[0]
			}
			if req.Name == "" {
				return flagErrorf("kernel import: --name is required")
			}
			if (req.Kernel == "") == (req.Deb == "") {
				return flagErrorf("kernel import: give either a kernel file or --deb FILE")
			}
			if req.Deb != "" && (req.Initrd != "" || req.Modules != "") {
				return flagErrorf("kernel import: --initrd and --modules do not go with --deb (the .deb has both)")
			}
			if req.Initrd != "" && req.Modules != "" {
				return flagErrorf("kernel import: give --initrd or --modules, not both")
			}
			var err error
			for _, p := range []*string{&req.Kernel, &req.Initrd, &req.Modules, &req.Deb} {
				if *p, err = abs(*p); err != nil {
					return err
				}
			}
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress(f.IO)
			k, err := c.ImportKernel(cmd.Context(), req, p.event)
			p.done()
			if err != nil {
				return err
			}
			return printKernelResult(f, k, asJSON)
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "name for the kernel")
	cmd.Flags().StringVar(&req.Initrd, "initrd", "", "initramfs to boot with the kernel")
	cmd.Flags().StringVar(&req.Modules, "modules", "", "lib/modules/VERSION directory to build the initramfs from")
	cmd.Flags().StringVar(&req.Deb, "deb", "", "Debian linux-image .deb to import")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func printKernelResult(f *Factory, k api.Kernel, asJSON bool) error {
	if asJSON {
		return printJSON(f, k)
	}
	fmt.Fprintf(f.IO.Out, "kernel %s ready: %s, %s", k.Name, k.Version, k.Format)
	if len(k.Modules) > 0 {
		fmt.Fprintf(f.IO.Out, ", initramfs with %d modules", len(k.Modules))
	}
	fmt.Fprintln(f.IO.Out)
	return nil
}

func newKernelPullCmd(f *Factory) *cobra.Command {
	var req api.PullKernelRequest
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pull CATALOG-NAME|OCI-REF",
		Short: "Fetch a kernel from the catalog or from an OCI image",
		Long: `Fetch a kernel. Catalog names: ` + strings.Join(catalog.KernelNames(), ", ") + `.
debian-cloud uses the host's own apt (apt-get download) on a Debian or Ubuntu
host. An OCI image must hold /boot/vmlinux or /boot/vmlinuz*, optionally an
initrd in /boot and modules in /lib/modules.`,
		Example: `  banger kernel pull debian-cloud
  banger kernel pull 127.0.0.1:5000/kernels/k:6.1 --name k61`,
		Args: exactArgs(1, "one catalog name or OCI reference"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Ref = args[0]
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress(f.IO)
			k, err := c.PullKernel(cmd.Context(), req, p.event)
			p.done()
			if err != nil {
				return err
			}
			return printKernelResult(f, k, asJSON)
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "name for the kernel (default: the catalog name, or from the reference)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newKernelListCmd(f *Factory) *cobra.Command {
	var asJSON, available bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List kernels",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if available {
				if asJSON {
					return printJSON(f, catalog.Kernels())
				}
				for _, e := range catalog.Kernels() {
					fmt.Fprintf(f.IO.Out, "%s\t%s\n", e.Name, e.Description)
				}
				return nil
			}
			return fetchAndPrint(f, cmd, asJSON, (*client.Client).Kernels, func(w io.Writer, ks []api.Kernel) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVERSION\tFORMAT\tINITRD\tSOURCE\tCREATED")
				for _, k := range ks {
					initrd := "-"
					if k.Initrd != "" {
						initrd = "yes"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.Name, k.Version, k.Format, initrd, k.Source, ago(k.CreatedAt))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.Flags().BoolVar(&available, "available", false, "list the catalog's kernels instead")
	return cmd
}

func newKernelShowCmd(f *Factory) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one kernel",
		Args:  exactArgs(1, "one kernel name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			get := func(c *client.Client, ctx context.Context) (api.Kernel, error) { return c.Kernel(ctx, args[0]) }
			return fetchAndPrint(f, cmd, asJSON, get, func(w io.Writer, k api.Kernel) error {
				tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
				fmt.Fprintf(tw, "name:\t%s\nversion:\t%s\nformat:\t%s\npvh:\t%v\nsource:\t%s\nvmlinux:\t%s\n", k.Name, k.Version, k.Format, k.PVH, k.Source, k.Vmlinux)
				if k.BzImage != "" {
					fmt.Fprintf(tw, "bzImage:\t%s\n", k.BzImage)
				}
				if k.Initrd != "" {
					fmt.Fprintf(tw, "initrd:\t%s\n", k.Initrd)
				}
				if len(k.Modules) > 0 {
					fmt.Fprintf(tw, "modules:\t%s\n", strings.Join(k.Modules, " "))
				}
				fmt.Fprintf(tw, "size:\t%s\ncreated:\t%s\n", humanBytes(k.SizeBytes), k.CreatedAt.Local().Format(time.RFC3339))
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newKernelRmCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"delete"},
		Short:   "Delete kernels",
		Args:    minArgs("kernel name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return deleteEach(f, cmd, "kernel", args, (*client.Client).DeleteKernel)
		},
	}
}
