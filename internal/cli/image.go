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
	"github.com/bangervm/banger/internal/config"
)

func newImageCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Pull, list and delete root filesystem images",
	}
	cmd.AddCommand(newImagePullCmd(f), newImageListCmd(f), newImageShowCmd(f), newImageDeleteCmd(f),
		newImageRegisterCmd(f), newImagePromoteCmd(f), newImageCacheCmd(f))
	return cmd
}

// ImagePullOptions are the inputs of `image pull`.
type ImagePullOptions struct {
	Ref    string
	Name   string
	Size   string
	Kernel string
	JSON   bool
}

func newImagePullCmd(f *Factory) *cobra.Command {
	var o ImagePullOptions
	cmd := &cobra.Command{
		Use:   "pull REF|CATALOG-NAME",
		Short: "Turn an OCI image or a catalog image into a bootable root filesystem",
		Long: `Pull an OCI image (linux/amd64) and flatten its layers into an ext4 root
filesystem, or build a catalog image locally. Registries on loopback are
reached over plain HTTP, as Docker does; credentials come from
~/.docker/config.json.`,
		Example: `  banger image pull docker.io/library/alpine:3.20
  banger image pull 127.0.0.1:5000/team/dev:1 --name dev
  banger image pull debian-bookworm`,
		Args: exactArgs(1, "one image reference or catalog name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Ref = args[0]
			var size int64
			if o.Size != "" {
				var err error
				if size, err = config.ParseSize(o.Size); err != nil {
					return &FlagError{Err: err}
				}
			}
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress(f.IO)
			img, err := c.PullImage(cmd.Context(), api.PullImageRequest{Ref: o.Ref, Name: o.Name, SizeBytes: size, Kernel: o.Kernel}, p.event)
			p.done()
			if err != nil {
				return err
			}
			if o.JSON {
				return printJSON(f, img)
			}
			fmt.Fprintf(f.IO.Out, "image %s ready: %s (%s)\n", img.Name, img.Digest, humanBytes(img.SizeBytes))
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Name, "name", "", "name for the image (default: from the reference)")
	cmd.Flags().StringVar(&o.Size, "size", "", "size of the ext4 file system, e.g. 4G (default: content × 1.5, at least 1 GiB)")
	cmd.Flags().StringVar(&o.Kernel, "kernel", "", "default kernel for VMs of this image")
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print the result as JSON")
	return cmd
}

func newImageListCmd(f *Factory) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return fetchAndPrint(f, cmd, asJSON, (*client.Client).Images, func(w io.Writer, imgs []api.Image) error {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSOURCE\tREF\tSIZE\tCREATED")
				for _, i := range imgs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", i.Name, i.Source, i.Ref, humanBytes(i.SizeBytes), ago(i.CreatedAt))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newImageShowCmd(f *Factory) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one image",
		Args:  exactArgs(1, "one image name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			get := func(c *client.Client, ctx context.Context) (api.Image, error) { return c.Image(ctx, args[0]) }
			return fetchAndPrint(f, cmd, asJSON, get, func(w io.Writer, i api.Image) error {
				tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
				fmt.Fprintf(tw, "name:\t%s\nsource:\t%s\nref:\t%s\ndigest:\t%s\nrootfs:\t%s\nsize:\t%s (content %s)\n",
					i.Name, i.Source, i.Ref, i.Digest, i.RootFS, humanBytes(i.SizeBytes), humanBytes(i.ContentBytes))
				if i.Kernel != "" {
					fmt.Fprintf(tw, "kernel:\t%s\n", i.Kernel)
				}
				fmt.Fprintf(tw, "entrypoint:\t%s\ncmd:\t%s\nworkdir:\t%s\nuser:\t%s\nenv:\t%s\nlayers:\t%d\ncreated:\t%s\n",
					strings.Join(i.Config.Entrypoint, " "), strings.Join(i.Config.Cmd, " "), i.Config.WorkingDir, i.Config.User,
					strings.Join(i.Config.Env, " "), len(i.Layers), i.CreatedAt.Local().Format(time.RFC3339))
				return tw.Flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newImageDeleteCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Delete images",
		Args:    minArgs("image name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return deleteEach(f, cmd, "image", args, (*client.Client).DeleteImage)
		},
	}
	return cmd
}

func newImagePromoteCmd(f *Factory) *cobra.Command {
	var req api.PromoteImageRequest
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "promote NAME [--as NEW]",
		Short: "Make a pulled image local: pinned, never replaced by a pull",
		Long: `Make the pulled image NAME a local image (source "promoted"): it keeps the
root filesystem, config and kernel it has now; a later pull of its reference,
or into its name, never replaces it (a pull into its name is refused); it
holds no layer blob in the cache, so image cache prune --all leaves it
whole. With --as NEW, a promoted copy named NEW shares the root filesystem
and NAME stays a pulled image. Delete a promoted image with image delete.`,
		Example: `  banger image pull 127.0.0.1:5000/team/dev:1 --name dev
  banger image promote dev --as dev-2026-12     # a pinned copy; dev follows the registry
  banger image promote dev                      # dev itself becomes local`,
		Args: exactArgs(1, "one image name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			img, err := c.PromoteImage(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(f, img)
			}
			fmt.Fprintf(f.IO.Out, "image %s is local (%s)\n", img.Name, img.Ref)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.As, "as", "", "promote a copy under this name, leaving NAME as it is")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newImageRegisterCmd(f *Factory) *cobra.Command {
	var req api.RegisterImageRequest
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "register --name NAME --rootfs FILE",
		Short:   "Adopt an existing ext4 root filesystem as an image (it is copied)",
		Example: `  banger image register --name mine --rootfs ./rootfs.ext4 --kernel debian-cloud`,
		Args:    exactArgs(0, "no arguments (use --name and --rootfs)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.Name == "" || req.RootFS == "" {
				return flagErrorf("image register: --name and --rootfs are required")
			}
			abs, err := filepath.Abs(req.RootFS)
			if err != nil {
				return err
			}
			req.RootFS = abs
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			p := newProgress(f.IO)
			img, err := c.RegisterImage(cmd.Context(), req, p.event)
			p.done()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(f, img)
			}
			fmt.Fprintf(f.IO.Out, "image %s registered (%s)\n", img.Name, humanBytes(img.SizeBytes))
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "name for the image")
	cmd.Flags().StringVar(&req.RootFS, "rootfs", "", "ext4 file to adopt")
	cmd.Flags().StringVar(&req.Kernel, "kernel", "", "default kernel for VMs of this image")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newImageCacheCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Inspect or prune the layer-blob cache shared by all images",
	}
	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List cached layer blobs and the images built from them",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			blobs, err := c.ImageCache(cmd.Context())
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(f, blobs)
			}
			tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DIGEST\tSIZE\tIMAGES")
			var total int64
			for _, b := range blobs {
				total += b.SizeBytes
				fmt.Fprintf(tw, "%s\t%s\t%s\n", b.Digest, humanBytes(b.SizeBytes), strings.Join(b.Images, ","))
			}
			fmt.Fprintf(tw, "total\t%s\t\n", humanBytes(total))
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print as JSON")
	var req api.PruneCacheRequest
	var pruneJSON bool
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Remove cached blobs that no image was built from (--all: every blob)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			res, err := c.PruneImageCache(cmd.Context(), req)
			if err != nil {
				return err
			}
			if pruneJSON {
				return printJSON(f, res)
			}
			verb := "removed"
			if res.DryRun {
				verb = "would remove"
			}
			for _, b := range res.Removed {
				fmt.Fprintf(f.IO.Out, "%s %s (%s)\n", verb, b.Digest, humanBytes(b.SizeBytes))
			}
			fmt.Fprintf(f.IO.Out, "%s %d blobs, %s\n", verb, len(res.Removed), humanBytes(res.FreedBytes))
			return nil
		},
	}
	prune.Flags().BoolVar(&req.DryRun, "dry-run", false, "only list what would be removed")
	prune.Flags().BoolVar(&req.All, "all", false, "remove every cached blob, not only unreferenced ones")
	prune.Flags().BoolVar(&pruneJSON, "json", false, "print as JSON")
	cmd.AddCommand(list, prune)
	return cmd
}

func ago(t time.Time) string {
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
