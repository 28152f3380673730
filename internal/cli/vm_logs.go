package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/internal/termtext"
)

type vmLogsOptions struct {
	VM     string
	Follow bool
	// Raw prints the console's bytes unchanged, even to a terminal.
	Raw bool
}

func newVMLogsCmd(f *Factory) *cobra.Command {
	var opts vmLogsOptions
	cmd := &cobra.Command{
		Use:   "logs VM",
		Short: "Print a VM's console log (kernel and agent messages)",
		Long: `Print a VM's console log (kernel and agent messages).

The guest writes its console, so on a terminal control characters and escape
sequences are shown as visible escapes (\x1b) instead of being sent to the
terminal; --raw prints the bytes unchanged. Output to a pipe or file is
always unchanged.`,
		Args: exactArgs(1, "one VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.VM = args[0]
			return runVMLogs(cmd.Context(), f, opts)
		},
	}
	cmd.Flags().BoolVarP(&opts.Follow, "follow", "f", false, "keep printing new output")
	cmd.Flags().BoolVar(&opts.Raw, "raw", false, "print the console's bytes unchanged, even to a terminal")
	return cmd
}

func runVMLogs(ctx context.Context, f *Factory, opts vmLogsOptions) error {
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	if opts.Raw || !f.IO.OutTTY {
		return c.VMLogs(ctx, opts.VM, opts.Follow, f.IO.Out)
	}
	w := termtext.NewWriter(f.IO.Out)
	err = c.VMLogs(ctx, opts.VM, opts.Follow, w)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}
