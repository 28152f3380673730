// Package doctor checks that this host can run banger and says, for each
// finding, what to do about it: a status (pass, warn, fail, or skip when
// the check does not apply here), one line of detail and one line of fix.
// Some findings come with a safe automatic fix that Run applies when
// asked. Checks see the host only through Env, so tests hand them a fake
// one.
package doctor

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/install"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/paths"
)

// Status is a check's verdict.
type Status string

// Statuses. Only Fail makes banger doctor exit non-zero.
const (
	Pass Status = "pass"
	Warn Status = "warn"
	Fail Status = "fail"
	// Skip: the check does not apply (the feature is off or not built
	// yet, or what it needs is unknown because the daemon is down).
	Skip Status = "skip"
)

// Result is one check's finding. Its JSON form is what banger doctor
// --json prints: keep the field names and their meaning stable.
type Result struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Fix is one line the user can run or apply; empty on a pass.
	Fix string `json:"fix"`
	// Fixed: Run applied the automatic fix, and this is the check run
	// again afterwards.
	Fixed bool `json:"fixed"`

	// autofix is the safe fix Run applies when asked, or nil.
	autofix func() error
}

// Daemon is what the checks ask of the running daemon; *client.Client
// implements it.
type Daemon interface {
	Version(ctx context.Context) (api.VersionInfo, error)
	Engine(ctx context.Context) (api.EngineInfo, error)
	Network(ctx context.Context) (api.NetworkInfo, error)
	VMs(ctx context.Context) ([]api.VM, error)
	Images(ctx context.Context) ([]api.Image, error)
	Kernels(ctx context.Context) ([]api.Kernel, error)
}

// Space is what Statfs reports of a file system.
type Space struct {
	Free  uint64 // bytes available to this user
	Total uint64
	// Dev identifies the file system, so two directories on one are
	// reported once.
	Dev uint64
}

// Env is everything the checks read. HostEnv fills in the probes of the
// real host; the caller adds the layout, config, daemon and ssh fields.
type Env struct {
	Layout paths.Layout
	// Config is config.toml with environment overrides; ConfigErr is why
	// it could not be loaded (Config then holds the defaults).
	Config    config.Config
	ConfigErr error
	// Daemon is a client of the daemon (started if need be), or nil with
	// DaemonErr saying why there is none.
	Daemon    Daemon
	DaemonErr error
	// Version and Commit are this binary's, compared with the daemon's.
	Version, Commit string

	// Root is prepended to the /dev paths probed.
	Root   string
	GOARCH string
	UID    int

	// SSHConfig is the user's ~/.ssh/config; SSHInclude is banger's own
	// ssh_config that it should include.
	SSHConfig, SSHInclude string
	// InstallSSH does what banger ssh-config --install does; nil offers
	// no automatic fix.
	InstallSSH func() error

	// Migrations reports the state store's migration level next to the
	// highest this banger knows (bangerd --check-migrations --json), so
	// that the CLI need not link SQLite.
	Migrations func(ctx context.Context) (MigrationLevel, error)

	// OpenRW opens path read-write and closes it again.
	OpenRW   func(path string) error
	LookPath func(file string) (string, error)
	HostNets func(ctx context.Context) ([]network.HostNet, error)
	Statfs   func(path string) (Space, error)

	// Install is the status of the system install (banger system
	// status), nil when banger is not installed as a system service.
	Install *install.Status
}

// MigrationLevel is the state store's migration and the latest one known.
type MigrationLevel struct {
	Current int `json:"current"`
	Latest  int `json:"latest"`
}

// facts is Env plus what the daemon said, asked once per Run.
type facts struct {
	Env
	version                       api.VersionInfo
	engine                        api.EngineInfo
	net                           api.NetworkInfo
	vms                           []api.VM
	versionErr, engineErr, netErr error
	vmsErr                        error
}

func gather(ctx context.Context, env Env) *facts {
	f := &facts{Env: env}
	if env.Daemon == nil {
		err := env.DaemonErr
		if err == nil {
			err = fmt.Errorf("no daemon client")
		}
		f.versionErr, f.engineErr, f.netErr, f.vmsErr = err, err, err, err
		return f
	}
	f.version, f.versionErr = env.Daemon.Version(ctx)
	f.engine, f.engineErr = env.Daemon.Engine(ctx)
	f.net, f.netErr = env.Daemon.Network(ctx)
	f.vms, f.vmsErr = env.Daemon.VMs(ctx)
	return f
}

// dev is the path of /dev/name under Root.
func (f *facts) dev(name string) string { return filepath.Join(f.Root, "dev", name) }

// networkWanted says whether host networking is meant to be on: as the
// daemon saw its config, else as this process reads it.
func (f *facts) networkWanted() bool {
	if f.netErr == nil {
		return f.net.Configured
	}
	return f.Config.Network
}

type check struct {
	name string
	run  func(ctx context.Context, f *facts) Result
}

// checks run in this order: the daemon first, since many findings below
// depend on it and its failure explains theirs.
var checks = []check{
	{"architecture", checkArch},
	{"config", checkConfig},
	{"daemon", checkDaemon},
	{"socket", checkSocket},
	{"kvm", checkKVM},
	{"engines", checkEngines},
	{"vhost-vsock", checkVhostVsock},
	{"tun", checkTun},
	{"network", checkNetwork},
	{"network-tools", checkNetworkTools},
	{"subnet", checkSubnet},
	{"dns", checkDNS},
	{"dns-routing", checkDNSRouting},
	{"ssh-config", checkSSHConfig},
	{"state-store", checkStore},
	{"agents", checkAgents},
	{"disk-space", checkDisk},
	{"vm-defaults", checkVMDefaults},
	{"install-drift", checkInstallDrift},
	{"unit-hardening", checkUnitHardening},
}

// Names lists every check, in the order Run reports them.
func Names() []string {
	out := make([]string, len(checks))
	for i, c := range checks {
		out[i] = c.name
	}
	return out
}

// Run runs every check. With fix, a finding that is not a pass and has a
// safe automatic fix gets it, and its check runs again.
func Run(ctx context.Context, env Env, fix bool) []Result {
	f := gather(ctx, env)
	out := make([]Result, 0, len(checks))
	for _, c := range checks {
		r := runOne(ctx, f, c)
		if fix && r.Status != Pass && r.autofix != nil {
			if err := r.autofix(); err != nil {
				r.Detail += fmt.Sprintf(" (automatic fix failed: %v)", err)
			} else {
				r = runOne(ctx, f, c)
				r.Fixed = true
			}
		}
		out = append(out, r)
	}
	return out
}

func runOne(ctx context.Context, f *facts, c check) Result {
	r := c.run(ctx, f)
	r.Name = c.name
	return r
}

// Failed reports whether any result is a failure.
func Failed(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return true
		}
	}
	return false
}

func pass(format string, a ...any) Result {
	return Result{Status: Pass, Detail: fmt.Sprintf(format, a...)}
}

func skip(format string, a ...any) Result {
	return Result{Status: Skip, Detail: fmt.Sprintf(format, a...)}
}

func warn(detail, fix string) Result { return Result{Status: Warn, Detail: detail, Fix: fix} }

func fail(detail, fix string) Result { return Result{Status: Fail, Detail: detail, Fix: fix} }

// needsDaemon is the result of a check that cannot tell without the
// daemon; the daemon check itself reports the failure.
func needsDaemon(err error) Result {
	return skip("needs the daemon, which did not answer: %v", err)
}
