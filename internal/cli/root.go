// Package cli is the banger command line: a cobra tree with a file per
// command group. Commands stay thin: they fill an options struct, call the
// daemon through package client, and render text or --json.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/install"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/termtext"
)

// Exit statuses.
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 2
	ExitInterrupted = 130
)

// Factory carries what commands need, built lazily so that `banger
// version` or `banger completion` never start a daemon.
type Factory struct {
	IO     *IOStreams
	Layout paths.Layout
	// Installed: Layout is a system install's, whose daemon systemd
	// runs as InstalledOwner; the CLI neither starts nor stops it.
	Installed      bool
	InstalledOwner int
	// Install is the install record, when Installed.
	Install install.Record
	// Client returns a connected client, starting the daemon if needed.
	Client func(ctx context.Context) (*client.Client, error)
	// Running returns a client of a daemon that already answers, and
	// never starts one (shell completion); nil means Client.
	Running func(ctx context.Context) (*client.Client, error)
}

// NewFactory returns the factory for a real run.
func NewFactory() *Factory {
	rec, installed := installedRecord(install.RecordPath, os.Getenv("BANGER_HOME") != "", os.Getuid())
	layout, owner := paths.FromEnv(), -1
	if installed {
		layout, owner = rec.Owner.Layout(rec.Paths), rec.Owner.UID
	}
	var c *client.Client
	return &Factory{
		IO:             System(),
		Layout:         layout,
		Installed:      installed,
		InstalledOwner: owner,
		Install:        rec,
		Client: func(ctx context.Context) (*client.Client, error) {
			if c != nil {
				return c, nil
			}
			var err error
			c, err = connect(ctx, layout, owner)
			return c, err
		},
		Running: func(ctx context.Context) (*client.Client, error) {
			rc := client.New(layout.Socket())
			if installed {
				rc = client.NewFor(layout.Socket(), owner)
			}
			_, err := rc.Version(ctx)
			return rc, err
		},
	}
}

// installedRecord returns the install record when the CLI should talk
// to the installed daemon: installed, BANGER_HOME not set (development
// and tests keep their own daemon, whatever is installed), and run by the
// owner or root. Then the CLI never starts a daemon of its own.
func installedRecord(record string, bangerHome bool, uid int) (install.Record, bool) {
	if bangerHome {
		return install.Record{}, false
	}
	r, err := install.Read(record)
	if err != nil || (uid != 0 && uid != r.Owner.UID) {
		return install.Record{}, false
	}
	return r, true
}

// FlagError is a usage mistake: exit status 2 and a hint to see --help.
type FlagError struct{ Err error }

func (e *FlagError) Error() string { return e.Err.Error() }
func (e *FlagError) Unwrap() error { return e.Err }

func flagErrorf(format string, a ...any) error {
	return &FlagError{Err: fmt.Errorf(format, a...)}
}

// NewRootCmd builds the command tree.
func NewRootCmd(f *Factory) *cobra.Command {
	root := &cobra.Command{
		Use:   "banger",
		Short: "One-command development sandboxes on microVMs",
		Long: `banger gives you a throw-away Linux machine — own kernel, root filesystem and
network — in seconds, from any OCI image.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(f.IO.Out)
	root.SetErr(f.IO.ErrOut)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &FlagError{Err: err} })
	root.AddCommand(newVersionCmd(f), newImageCmd(f), newKernelCmd(f), newDaemonCmd(f), newVMCmd(f), newTemplateCmd(f), newVMListCmd(f, "ps"), newSSHConfigCmd(f), newSSHProxyCmd(f), newEngineCmd(f), newDoctorCmd(f), newSystemCmd(f), newUpdateCmd(f), newMCPCmd(f), newClusterCmd(f))
	refuseUnknownSubcommands(root)
	registerCompletions(root, f)
	return root
}

// refuseUnknownSubcommands makes every command group (a command with
// subcommands and nothing to run itself) a usage error when given an
// argument that names none of them: cobra would print the group's help
// and exit 0, so a typo ("banger vm frobnicate") looked like success.
// With no argument the group still prints its help.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !cmd.HasSubCommands() || cmd.Run != nil || cmd.RunE != nil || !cmd.HasParent() {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return c.Help()
		}
		return flagErrorf("unknown command %q for %q", args[0], c.CommandPath())
	}
}

// Run executes the CLI with args and returns the process exit status.
func Run(f *Factory, args []string) int {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	root := NewRootCmd(f)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var fe *FlagError
	var ee *ExitError
	var gf *guestFailure
	switch {
	case errors.As(err, &ee):
		return ee.Code
	case errors.As(err, &gf):
		printError(f.IO.ErrOut, err)
		return ExitBangerFailed
	case errors.As(err, &fe), strings.HasPrefix(err.Error(), "unknown command"), strings.HasPrefix(err.Error(), "unknown flag"):
		printError(f.IO.ErrOut, err)
		fmt.Fprintln(f.IO.ErrOut, "Run 'banger --help' for usage.")
		return ExitUsage
	case ctx.Err() != nil || errdefs.IsCanceled(err):
		fmt.Fprintln(f.IO.ErrOut, "banger: interrupted")
		return ExitInterrupted
	}
	printError(f.IO.ErrOut, err)
	return ExitFailure
}

// printError prints err as one "banger: " line. Error text can carry what a
// guest wrote (a console tail, an agent's message), so it is escaped for the
// terminal, wherever it goes.
// printError prints err with the "banger: " prefix, unless it already
// starts with a command path ("banger vm stats: want one VM"), which would
// read "banger: banger vm stats: ...".
func printError(w io.Writer, err error) {
	msg := termtext.Escape(err.Error())
	if !strings.HasPrefix(msg, "banger ") && !strings.HasPrefix(msg, "banger: ") {
		msg = "banger: " + msg
	}
	fmt.Fprintln(w, msg)
}

// exactArgs is cobra.ExactArgs with a FlagError.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return flagErrorf("%s: want %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

func printJSON(f *Factory, v any) error {
	enc := json.NewEncoder(f.IO.Out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// fetchAndPrint is the body of the list and show commands: ask the daemon
// with get, then print the answer as JSON (--json) or with text.
func fetchAndPrint[T any](f *Factory, cmd *cobra.Command, asJSON bool, get func(*client.Client, context.Context) (T, error), text func(io.Writer, T) error) error {
	c, err := f.Client(cmd.Context())
	if err != nil {
		return err
	}
	v, err := get(c, cmd.Context())
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(f, v)
	}
	return text(f.IO.Out, v)
}

// deleteEach is the body of the delete commands: del for each name, in
// parallel, reporting each as "deleted NOUN NAME".
func deleteEach(f *Factory, cmd *cobra.Command, noun string, names []string, del func(*client.Client, context.Context, string) error) error {
	c, err := f.Client(cmd.Context())
	if err != nil {
		return err
	}
	return forEach(f, names, func(n string) (string, error) {
		return "deleted " + noun + " " + n, del(c, cmd.Context(), n)
	})
}
