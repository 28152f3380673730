package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/workspace"
)

// ExitError carries a guest command's exit status out of the CLI.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// ExitBangerFailed is the status of vm run/exec when banger itself failed,
// as distinct from the guest command (docker uses the same number).
const ExitBangerFailed = 125

// guestFailure marks an error of banger itself in a command whose exit
// status is otherwise the guest's.
type guestFailure struct{ err error }

func (g *guestFailure) Error() string { return g.err.Error() }
func (g *guestFailure) Unwrap() error { return g.err }

// defaultShell runs the image's bash when it has one, else sh.
var defaultShell = []string{"/bin/sh", "-c", `if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l`}

// execOptions are how a guest process is connected to this terminal.
type execOptions struct {
	TTY         bool // allocate a PTY in the guest (-t)
	Interactive bool // forward stdin (-i); implied when stdin is not a terminal
	Dir, User   string
	Env         []string
}

// runInVM runs argv in the VM with this process's streams and returns the
// guest status as an *ExitError (nil for 0).
func runInVM(ctx context.Context, f *Factory, c *client.Client, ref string, argv []string, o execOptions) error {
	req := api.ExecRequest{Argv: argv, TTY: o.TTY, Dir: o.Dir, User: o.User, Env: o.Env}
	stdio := client.ExecIO{Stdout: f.IO.Out, Stderr: f.IO.ErrOut}
	in, isFile := f.IO.In.(*os.File)
	stdinTTY := isFile && term.IsTerminal(int(in.Fd()))
	if o.Interactive || o.TTY || !stdinTTY {
		stdio.Stdin = f.IO.In
	}
	if o.TTY {
		if t := os.Getenv("TERM"); t != "" {
			req.Env = append(req.Env, "TERM="+t)
		} else {
			req.Env = append(req.Env, "TERM=xterm")
		}
	}
	if o.TTY && stdinTTY {
		fd := int(in.Fd())
		if w, h, err := term.GetSize(fd); err == nil {
			req.Cols, req.Rows = uint16(w), uint16(h)
		}
		old, err := term.MakeRaw(fd)
		if err == nil {
			defer term.Restore(fd, old)
		}
		resize := make(chan [2]uint16, 1)
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if w, h, err := term.GetSize(fd); err == nil {
					select {
					case resize <- [2]uint16{uint16(h), uint16(w)}:
					default:
					}
				}
			}
		}()
		stdio.Resize = resize
	} else {
		// Without a PTY, Ctrl-C and SIGTERM go to the guest process
		// rather than killing banger and leaving it running.
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(sigs)
		fwd := make(chan int, 4)
		go func() {
			for s := range sigs {
				fwd <- int(s.(syscall.Signal))
			}
		}()
		stdio.Signal = fwd
		// The command's context must not end on Ctrl-C: the guest decides.
		ctx = context.WithoutCancel(ctx)
	}
	st, err := c.Exec(ctx, ref, req, stdio)
	if err != nil {
		return &guestFailure{err}
	}
	if st.Signal != 0 {
		return &ExitError{Code: 128 + st.Signal}
	}
	if st.Code != 0 {
		return &ExitError{Code: st.Code}
	}
	return nil
}

func (o *execOptions) addFlags(cmd *cobra.Command) {
	cmd.Flags().BoolVarP(&o.TTY, "tty", "t", false, "allocate a pseudo-terminal in the guest")
	cmd.Flags().BoolVarP(&o.Interactive, "interactive", "i", false, "forward stdin even when it is a terminal")
	cmd.Flags().StringVarP(&o.Dir, "workdir", "w", "", "working directory in the guest (default: the image's)")
	cmd.Flags().StringVarP(&o.User, "user", "u", "", "user in the guest (default: the image's)")
	cmd.Flags().StringArrayVarP(&o.Env, "env", "e", nil, "set an environment variable, KEY=VALUE")
}

func newVMExecCmd(f *Factory) *cobra.Command {
	var o execOptions
	cmd := &cobra.Command{
		Use:   "exec VM -- CMD [ARG...]",
		Short: "Run a command in a running VM; its exit status becomes banger's",
		Example: `  banger vm exec box -- cat /etc/os-release
  echo hello | banger vm exec box -- tr a-z A-Z
  banger vm exec -t box -- top`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return flagErrorf("vm exec: want a VM and a command: banger vm exec VM -- CMD")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return &guestFailure{err}
			}
			return runInVM(cmd.Context(), f, c, args[0], args[1:], o)
		},
	}
	o.addFlags(cmd)
	return cmd
}

func newVMSSHCmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ssh VM [-- CMD...]",
		Short: "Open a shell in a running VM through its agent (no network needed)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return flagErrorf("vm ssh: want a VM")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := f.Client(cmd.Context())
			if err != nil {
				return &guestFailure{err}
			}
			argv := defaultShell
			if len(args) > 1 {
				argv = args[1:]
			}
			return runInVM(cmd.Context(), f, c, args[0], argv, shellOptions(f, len(args) > 1))
		},
	}
	return cmd
}

// shellOptions gives an interactive shell a PTY when this is a terminal.
func shellOptions(f *Factory, hasCmd bool) execOptions {
	in, ok := f.IO.In.(*os.File)
	tty := ok && term.IsTerminal(int(in.Fd()))
	return execOptions{TTY: tty && !hasCmd, Interactive: true}
}

// VMRunOptions are the inputs of vm run.
type VMRunOptions struct {
	sizeFlags
	Remove bool
	Keep   bool
	Detach bool
	Cmd    []string
	exec   execOptions
	// Path is a git repository to ship into the VM; DryRun lists what
	// would be shipped and boots nothing.
	Path   string
	DryRun bool
	ws     wsOptions
}

func newVMRunCmd(f *Factory) *cobra.Command {
	var o VMRunOptions
	cmd := &cobra.Command{
		Use:   "run [flags] [PATH] [-- CMD...]",
		Short: "Create and boot a VM, then open a shell in it or run CMD",
		Long: `Create and boot a VM. Without a command, open an interactive shell in it;
with -- CMD, run it and exit with its status. When the shell or command
exits, the VM is deleted, unless --keep (then banger vm ssh NAME to come
back). With -d, return as soon as the VM is up; it keeps running.

With PATH, a git repository, the VM gets /root/repo: a checkout at your
HEAD with your uncommitted changes to tracked files (and, with
--include-untracked, untracked files that are not ignored; ignored files
never), and commands run there. Your repository, index and config are only
read. Work is never lost silently: if the workspace holds changes you have
not exported (banger vm workspace export), the VM is kept and banger says
how to export and delete it; --rm deletes it all the same.`,
		Example: `  banger vm run --image dev --kernel debian-cloud           # a shell; the VM goes when you leave
  banger vm run --keep --name box --image dev              # a shell; the VM stays
  banger vm run --image dev -- sh -c 'echo hi; exit 7'      # prints hi, exits 7, VM deleted
  banger vm run -d --name box --image dev
  banger vm run ./myrepo -- make test
  banger vm run --dry-run --include-untracked ./myrepo`,
		RunE: func(cmd *cobra.Command, args []string) error {
			n := cmd.ArgsLenAtDash()
			if n < 0 {
				n = len(args)
			}
			if n > 1 {
				return flagErrorf("vm run: unexpected argument %q (one PATH at most; put the command after --)", args[1])
			}
			if n == 1 {
				o.Path = args[0]
			}
			o.Cmd = args[n:]
			if o.DryRun && o.Path == "" {
				return flagErrorf("vm run: --dry-run needs a PATH")
			}
			if o.Detach && (o.Remove || len(o.Cmd) > 0) {
				return flagErrorf("vm run: -d cannot be combined with --rm or a command")
			}
			if o.Keep && o.Remove {
				return flagErrorf("vm run: --keep and --rm cannot be combined")
			}
			req, err := o.request()
			if err != nil {
				return err
			}
			return runVMRun(cmd.Context(), f, o, req)
		},
	}
	o.sizeFlags.add(cmd)
	cmd.Flags().BoolVar(&o.Remove, "rm", false, "delete the VM when the command or shell exits, even with workspace changes not exported")
	cmd.Flags().BoolVar(&o.Keep, "keep", false, "keep the VM when the command or shell exits")
	cmd.Flags().BoolVarP(&o.Detach, "detach", "d", false, "return once the VM is running")
	cmd.Flags().StringVarP(&o.exec.Dir, "workdir", "w", "", "working directory in the guest (default: the image's)")
	cmd.Flags().StringArrayVarP(&o.exec.Env, "env", "e", nil, "set an environment variable, KEY=VALUE")
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", false, "list what of PATH would be shipped, and boot nothing")
	o.ws.add(cmd)
	return cmd
}

func runVMRun(ctx context.Context, f *Factory, o VMRunOptions, req api.CreateVMRequest) (retErr error) {
	var plan *workspace.Manifest
	if o.Path != "" {
		// Read the repository before booting anything: a bad PATH fails
		// fast and leaves no VM behind.
		m, err := planWorkspace(ctx, o.Path, o.ws)
		if err != nil {
			return &guestFailure{err}
		}
		if o.DryRun {
			printPlan(f, m)
			return nil
		}
		plan = &m
	}
	c, err := f.Client(ctx)
	if err != nil {
		return &guestFailure{err}
	}
	p := newProgress(f.IO)
	v, err := c.CreateVM(ctx, req, p.event)
	p.done()
	if err != nil {
		return &guestFailure{err}
	}
	if plan != nil {
		if err := ship(ctx, f, c, v.ID, *plan, o.ws); err != nil {
			// A sandbox without the repository it was asked for is half
			// made: remove it.
			c.DeleteVM(context.WithoutCancel(ctx), v.ID, true)
			return &guestFailure{err}
		}
	}
	if o.Detach {
		fmt.Fprintf(f.IO.Out, "vm %s running; banger vm ssh %s to get a shell\n", v.Name, v.Name)
		return nil
	}
	if !o.Keep {
		defer func() {
			// Even after Ctrl-C: the user asked for no leftovers.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
			defer cancel()
			if plan != nil && !o.Remove {
				// The VM as it is now, with its workspace's path.
				if cur, err := c.VM(dctx, v.ID); err == nil {
					v = cur
				}
			}
			if plan != nil && !o.Remove && unexportedChanges(dctx, c, v) {
				fmt.Fprintf(f.IO.ErrOut, "vm %s kept: its workspace has changes you have not exported.\n  banger vm workspace export %s | git apply    # bring them to your checkout\n  banger vm delete -f %s                        # then remove it\n", v.Name, v.Name, v.Name)
				return
			}
			if err := c.DeleteVM(dctx, v.ID, true); err != nil {
				printError(f.IO.ErrOut, fmt.Errorf("delete vm %s: %w", v.Name, err))
				if retErr == nil {
					retErr = &guestFailure{err}
				}
			}
		}()
	}
	eo := o.exec
	argv := o.Cmd
	if len(argv) == 0 {
		argv = defaultShell
		so := shellOptions(f, false)
		eo.TTY, eo.Interactive = so.TTY, true
	}
	err = runInVM(ctx, f, c, v.ID, argv, eo)
	if o.Keep && (err == nil || errors.As(err, new(*ExitError))) {
		fmt.Fprintf(f.IO.ErrOut, "vm %s is still running: banger vm ssh %s to return, banger vm delete -f %s to remove it\n", v.Name, v.Name, v.Name)
	}
	return err
}
