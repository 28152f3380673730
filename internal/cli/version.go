package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/buildinfo"
)

func newVersionCmd(f *Factory) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print banger's version, commit and build time",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v := api.VersionInfo{Version: buildinfo.Version, Commit: buildinfo.Commit, BuildTime: buildinfo.BuildTime, APIVersion: api.Version}
			if asJSON {
				return printJSON(f, v)
			}
			fmt.Fprintf(f.IO.Out, "banger %s\ncommit: %s\nbuilt:  %s\napi:    v%s\n", v.Version, v.Commit, v.BuildTime, v.APIVersion)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
