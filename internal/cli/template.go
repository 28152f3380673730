package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newTemplateCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "template",
		Short: "List and remove VM templates (saved guests VMs start from instead of booting)",
		Long: `A template is a guest saved at the point where it waits to be told who it is;
VMs of the same shape (engine, kernel, agent, image, vCPUs, memory, disk size,
NIC) start from it instead of booting. The first cold boot of a shape makes
one in the background; a template whose kernel, agent or image changed is
never used again and is removed by prune. Templates are a cache: their disk
space is capped by template_cache_max in config.toml (default 4G; "0" turns
templates off), and making one removes the least recently used over it.`,
	}
	var listJSON, pruneJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List templates",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			ts, err := c.Templates(cmd.Context())
			if err != nil {
				return err
			}
			if listJSON {
				return printJSON(f, ts)
			}
			tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tENGINE\tVCPU\tMEMORY\tNIC\tSIZE\tLAST USED\tIMAGE")
			var total int64
			for _, t := range ts {
				total += t.SizeBytes
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d MiB\t%v\t%s\t%s\t%s\n", t.ID, t.Engine, t.VCPU, t.MemoryMiB, t.NIC, humanBytes(t.SizeBytes), ago(t.LastUsed), t.Image)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(ts) > 0 {
				fmt.Fprintf(f.IO.Out, "%s of %s (template_cache_max; over it, making a template removes the least recently used)\n", humanBytes(total), humanBytes(ts[0].CacheMaxBytes))
			}
			return nil
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print as JSON")
	rm := &cobra.Command{
		Use:   "rm ID",
		Short: "Remove a template (VMs started from it run on)",
		Args:  exactArgs(1, "one template id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			if err := c.RemoveTemplate(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(f.IO.Out, "removed %s\n", args[0])
			return nil
		},
	}
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Remove stale templates (their kernel, agent or image changed) and unfinished ones",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			res, err := c.PruneTemplates(cmd.Context())
			if err != nil {
				return err
			}
			if pruneJSON {
				return printJSON(f, res)
			}
			for _, id := range res.Deleted {
				fmt.Fprintf(f.IO.Out, "removed %s\n", id)
			}
			fmt.Fprintf(f.IO.Out, "removed %d templates\n", len(res.Deleted))
			return nil
		},
	}
	prune.Flags().BoolVar(&pruneJSON, "json", false, "print as JSON")
	cmd.AddCommand(list, rm, prune)
	return cmd
}
