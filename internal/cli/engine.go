package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newEngineCmd(f *Factory) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "engine",
		Short: "Show which VM engine new VMs get, why, and what each engine found",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			info, err := c.Engine(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(f, info)
			}
			fmt.Fprintf(f.IO.Out, "default: %s (%s)\n", info.Default, info.Reason)
			tw := tabwriter.NewWriter(f.IO.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ENGINE\tAVAILABLE\tVERSION\tACCEL\tNOTE")
			for _, e := range info.Engines {
				fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\n", e.Name, e.Available, dash(e.Version), dash(e.Accel), e.Note)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
