package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/firecracker"
	"github.com/bangervm/banger/internal/roothelper"
)

// capSysAdmin is CAP_SYS_ADMIN, which the jailer needs (mount namespace,
// pivot_root).
const capSysAdmin = 21

type fcResult struct {
	engine engine.Engine
	status api.EngineStatus
}

// firecrackerEngine finds Firecracker (and its jailer, unless config
// jailer = false), checks that its version is supported, and records in h
// why it cannot be used when it cannot.
func firecrackerEngine(ctx context.Context, s config.Config, chrootBase string, log *slog.Logger, h *engine.Host) fcResult {
	st := api.EngineStatus{Name: engine.Firecracker}
	fail := func(err error) fcResult {
		h.FirecrackerErr = err
		st.Note = err.Error()
		return fcResult{status: st}
	}
	bin := s.FirecrackerBin
	if bin == "" {
		p, err := exec.LookPath("firecracker")
		if err != nil {
			return fail(errors.New("firecracker not found in PATH (set firecracker_bin in config.toml)"))
		}
		bin = p
	}
	jailer := s.JailerBin
	if s.Jailer && jailer == "" {
		p, err := exec.LookPath("jailer")
		if err != nil {
			return fail(errors.New("jailer not found in PATH (set jailer_bin, or jailer = false to run Firecracker without it)"))
		}
		jailer = p
	}
	cfg := firecracker.Config{
		Firecracker: bin, Jailer: jailer, UseJailer: s.Jailer, ChrootBase: chrootBase,
		UID: os.Getuid(), GID: os.Getgid(), LogMax: s.ConsoleLogBytes(), Logger: log,
	}
	if s.Jailer && (os.Geteuid() != 0 || !effectiveCap(capSysAdmin)) {
		// The jailer must start as root (mount namespace, chroot, mknod,
		// setuid): the root helper starts it, as it does what the network
		// needs.
		cfg.Launcher = roothelper.New(s.RootHelper)
	}
	e := firecracker.New(cfg)
	v, err := e.Version(ctx)
	if err != nil {
		return fail(err)
	}
	st.Version = v
	// Checked here, not only at boot, so that a too old Firecracker is
	// never chosen and banger engine and doctor say why.
	if err := firecracker.Supported(v); err != nil {
		return fail(err)
	}
	st.Available, st.Accel = true, string(engine.AccelKVM)
	// A Firecracker-compatible test double boots under QEMU and needs no
	// KVM; it is only ever selected by tests that set this.
	if os.Getenv("BANGER_TEST_FIRECRACKER_DOUBLE") == "1" {
		h.KVMErr = nil
		st.Note = "test double (BANGER_TEST_FIRECRACKER_DOUBLE=1): KVM not required"
	} else if h.KVMErr != nil {
		st.Note = fmt.Sprintf("found, but KVM is unusable: %v", h.KVMErr)
	}
	return fcResult{engine: e, status: st}
}
