package roothelper

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/safesocket"
	"github.com/bangervm/banger/internal/sdnotify"
)

// Main runs the root helper: bangerd --root-helper [--socket PATH] --owner
// UID [--allow-subnet CIDR]... [--jailer PATH --firecracker PATH
// --vms DIR [--templates DIR]]. args are the arguments after the program
// name (a --root-helper among them is accepted and ignored). It serves
// until SIGTERM or SIGINT, then removes the socket. It returns the exit
// status: 0, 1 on error, 2 on bad usage.
func Main(args []string) int {
	return run(args, os.Stderr)
}

const usage = "usage: bangerd --root-helper [--socket PATH] --owner UID [--allow-subnet CIDR]... [--jailer PATH --firecracker PATH --vms DIR [--templates DIR]]"

// options are the helper's command line.
type options struct {
	socket  string
	owner   int
	allowed []netip.Prefix // nil: network.DefaultRanges()
	// jailer, firecracker and vms allow launchJailer when all are set
	// (JailerPolicy).
	jailer, firecracker, vms string
	// templates, with the jailer's options, allows jailed templates
	// (sealTemplate, template files in a jail).
	templates string
}

// parseFlags parses the helper's command line; errors go to stderr with
// the usage.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bangerd --root-helper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := options{}
	fs.StringVar(&o.socket, "socket", DefaultSocket, "unix socket to listen on")
	fs.IntVar(&o.owner, "owner", -1, "uid allowed to call besides root (the user bangerd runs as)")
	fs.Func("allow-subnet", "a range banger's subnet may be taken from, e.g. 10.50.0.0/16 (repeatable; default: "+joinPrefixes(network.DefaultRanges())+")", func(v string) error {
		p, err := ParseAllowedSubnet(v)
		if err == nil {
			o.allowed = append(o.allowed, p)
		}
		return err
	})
	fs.StringVar(&o.jailer, "jailer", "", "the jailer binary launchJailer runs (absolute; with --firecracker and --vms)")
	fs.StringVar(&o.firecracker, "firecracker", "", "the only firecracker binary the jailer may exec (absolute)")
	fs.StringVar(&o.vms, "vms", "", "the owner's VM directories, the daemon's <state>/vms (absolute): jails are built only in them")
	fs.StringVar(&o.templates, "templates", "", "the owner's template cache, the daemon's <cache>/templates (absolute; with --jailer): jailed VMs may start from templates sealed there")
	fs.Bool("root-helper", true, "run as the root helper (implied)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	jail := []string{o.jailer, o.firecracker, o.vms}
	someJail := slices.ContainsFunc(jail, func(s string) bool { return s != "" })
	allJail := !slices.Contains(jail, "")
	for _, p := range jail {
		if p != "" && (!filepath.IsAbs(p) || filepath.Clean(p) != p) {
			allJail = false
		}
	}
	badTemplates := o.templates != "" && (!allJail || !filepath.IsAbs(o.templates) || filepath.Clean(o.templates) != o.templates)
	if fs.NArg() > 0 || o.owner < 0 || someJail && !allJail || badTemplates {
		fmt.Fprintln(stderr, usage)
		return o, fmt.Errorf("%s: %w", usage, errdefs.ErrInvalidArgument)
	}
	return o, nil
}

func run(args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("component", "root-helper")
	if os.Geteuid() != 0 {
		log.Error("root helper must run as root", "euid", os.Geteuid())
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ln, err := Listen(o.socket, o.owner)
	if err != nil {
		log.Error("listen", "socket", o.socket, "err", err)
		return 1
	}
	defer os.Remove(o.socket)
	allowed := o.allowed
	if allowed == nil {
		allowed = network.DefaultRanges()
	}
	var jail *JailerPolicy
	if o.jailer != "" {
		gid, err := OwnerGID(o.owner)
		if err != nil {
			log.Error("jailer policy", "err", err)
			return 1
		}
		jail = &JailerPolicy{Jailer: o.jailer, Firecracker: o.firecracker, VMs: o.vms, Templates: o.templates, UID: o.owner, GID: gid,
			StateFile: filepath.Join(filepath.Dir(o.socket), "jailed.json"), MountDir: filepath.Join(filepath.Dir(o.socket), "jails")}
	}
	log.Info("serving", "socket", o.socket, "owner", o.owner, "allowed_subnets", joinPrefixes(allowed), "jailer", o.jailer, "vms", o.vms, "templates", o.templates)
	if err := sdnotify.Ready(); err != nil {
		log.Warn("tell systemd the helper is ready", "err", err)
	}
	err = Serve(ctx, ln, ServerConfig{Owner: o.owner, AllowedSubnets: allowed, Jailer: jail, Log: log, Setup: filepath.Join(filepath.Dir(o.socket), network.SetupFile)})
	ln.Close()
	if err != nil {
		log.Error("serve", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

// Listen creates the helper's socket at path: its directory (0755 and
// root's, so that only root can replace the socket; checked as
// safesocket.EnsureDir does), a stale socket removed, and the socket
// itself owned by owner with mode 0600. Only root and owner can connect at
// all; Serve's SO_PEERCRED check is the second guard. It refuses if
// another helper answers on path (errdefs.ErrAlreadyExists) or if path is
// something other than a socket. Closing the listener removes the socket.
func Listen(path string, owner int) (*net.UnixListener, error) {
	if err := safesocket.EnsureDir(filepath.Dir(path), os.Geteuid(), 0o755); err != nil {
		return nil, err
	}
	ln, err := safesocket.Listen(path, 0o600)
	if err != nil {
		return nil, err
	}
	if err := os.Chown(path, owner, -1); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
