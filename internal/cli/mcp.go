package cli

import (
	"io"
	"log/slog"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/bangervm/banger/internal/buildinfo"
	"github.com/bangervm/banger/internal/mcpserver"
)

func newMCPCmd(f *Factory) *cobra.Command {
	cfg := mcpserver.Config{MaxVMs: 3, TTL: 2 * time.Hour}
	cmd := &cobra.Command{
		Use:   "mcp",
		Short: "Serve sandboxes to a coding agent: an MCP server on stdio",
		Long: `Run a Model Context Protocol server on standard input and output, for a coding
agent's MCP configuration. The agent can create sandboxes (with a --repo
repository copied in), run commands, read, write and copy files, list ports,
export the workspace diff, and stop and delete them.

The server manages only the VMs it creates (labelled banger.mcp=<instance>),
at most --max-vms at once, each with --net and deleted after --ttl at the
latest; host paths are reachable only inside the --repo directories. When
the client disconnects, its VMs are deleted unless --keep. Logs go to
standard error.`,
		Example: `  banger mcp --repo ~/src/myproject
  banger mcp --repo . --max-vms 2 --ttl 1h --net none`,
		Args: exactArgs(0, "no arguments (give repositories with --repo)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cfg.Validate(); err != nil {
				return &FlagError{Err: err}
			}
			c, err := f.Client(cmd.Context())
			if err != nil {
				return err
			}
			cfg.Client, cfg.Version = c, buildinfo.Version
			cfg.Log = slog.New(slog.NewTextHandler(f.IO.ErrOut, nil))
			s, err := mcpserver.New(cfg)
			if err != nil {
				return err
			}
			return s.Run(cmd.Context(), &mcp.IOTransport{Reader: io.NopCloser(f.IO.In), Writer: nopWriteCloser{f.IO.Out}})
		},
	}
	cmd.Flags().StringArrayVar(&cfg.Repos, "repo", nil, "a host directory the agent may ship as a workspace and copy files from and to (repeatable; none: no host access)")
	cmd.Flags().StringVar(&cfg.Net, "net", cfg.Net, "network of every sandbox: public (NAT out only), full or none (default: the daemon's, public unless networking is off)")
	cmd.Flags().IntVar(&cfg.MaxVMs, "max-vms", cfg.MaxVMs, "most sandboxes at once")
	cmd.Flags().DurationVar(&cfg.TTL, "ttl", cfg.TTL, "every sandbox is deleted this long after its creation at the latest (the agent may ask for less)")
	cmd.Flags().BoolVar(&cfg.Keep, "keep", false, "keep the sandboxes when the client disconnects (their --ttl still applies)")
	cmd.Flags().StringVar(&cfg.Image, "image", "", "image of a sandbox when the agent names none (default: config default_image)")
	return cmd
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
