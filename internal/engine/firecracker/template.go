package firecracker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/proc"
)

// Files in a template directory.
const (
	TemplateMemory   = "memory"   // guest memory (snapshot mem_file_path)
	TemplateSnapshot = "snapshot" // microVM state (snapshot snapshot_path)
)

var _ engine.Templater = (*Engine)(nil)

// startMode is how start sets the VM up beyond a plain boot.
type startMode struct {
	// relative: the drives and the vsock socket are given to Firecracker
	// as paths relative to its working directory (the VM's directory),
	// drives through symlinks there. A snapshot records these paths and
	// Firecracker reopens them on load "at the same relative paths"
	// (snapshot-support.md, Loading snapshots), so a clone, started in its
	// own directory, opens its own disks and socket, not the template's.
	// That also spares /snapshot/load's vsock_override, which older
	// supported releases refuse as an unknown field.
	relative bool
	// load: restore this snapshot instead of configuring a boot.
	load *snapshotLoadBody
	// minVersion, when set, is the oldest Firecracker this start needs,
	// for the reason in minWhy.
	minVersion [3]int
	minWhy     string
	// templateFiles are a jailed clone's template files, placed in its
	// jail with its own.
	templateFiles []JailFile
}

// NetworkOverridesVersion is the first Firecracker whose /snapshot/load
// takes network_overrides (CHANGELOG 1.12.0, #4731): a clone's NIC is
// backed by the clone's own tap only from there on.
var NetworkOverridesVersion = [3]int{1, 12, 0}

// nicIface is the iface_id of the VM's NIC (see configRequests).
const nicIface = "eth0"

// Snapshot API bodies, named after the OpenAPI definitions.
type (
	vmStateBody struct {
		State string `json:"state"` // "Paused", "Resumed"
	}
	snapshotCreateBody struct {
		SnapshotType string `json:"snapshot_type"`
		SnapshotPath string `json:"snapshot_path"`
		MemFilePath  string `json:"mem_file_path"`
	}
	memoryBackendBody struct {
		BackendType string `json:"backend_type"`
		BackendPath string `json:"backend_path"`
	}
	networkOverrideBody struct {
		IfaceID     string `json:"iface_id"`
		HostDevName string `json:"host_dev_name"`
	}
	snapshotLoadBody struct {
		SnapshotPath     string                `json:"snapshot_path"`
		MemBackend       memoryBackendBody     `json:"mem_backend"`
		ResumeVM         bool                  `json:"resume_vm"`
		NetworkOverrides []networkOverrideBody `json:"network_overrides,omitempty"`
	}
)

// driveLink is the name, in the VM's directory, of the symlink to disk i
// that a template's or clone's Firecracker opens.
func driveLink(i int) string { return driveLinkPrefix + driveID(i) }

const driveLinkPrefix = "drive-"

// relativePaths points p's drives and vsock at names relative to the
// VM's directory (see startMode.relative), making the drive symlinks. It
// returns the links it made, also on error.
func relativePaths(spec engine.Spec, p *apiPaths) ([]string, error) {
	var links []string
	for i, d := range spec.Disks {
		target, err := filepath.Abs(d.Path)
		if err != nil {
			return links, err
		}
		l := filepath.Join(spec.Dir, driveLink(i))
		if err := os.Remove(l); err != nil && !errors.Is(err, os.ErrNotExist) {
			return links, err
		}
		if err := os.Symlink(target, l); err != nil {
			return links, fmt.Errorf("link disk %s: %w", d.Path, err)
		}
		links = append(links, l)
		p.disks[i] = driveLink(i)
	}
	p.vsock = VsockSocket
	return links, nil
}

// loadRequests are the API calls that restore a clone: only the logger
// and metrics may precede PUT /snapshot/load (snapshot-support.md).
func loadRequests(p apiPaths, load snapshotLoadBody) []request {
	return []request{
		{"PUT", "/logger", loggerBody{LogPath: p.logFile, Level: "Info"}},
		{"PUT", "/metrics", metricsBody{MetricsPath: p.metricsFile}},
		{"PUT", "/snapshot/load", load},
	}
}

// loadSnapshot sends loadRequests. A failed load (Firecracker ends the
// process after one) marks the template bad.
func loadSnapshot(ctx context.Context, c *apiClient, p apiPaths, load snapshotLoadBody) error {
	for _, r := range loadRequests(p, load) {
		if err := c.do(ctx, r.Method, r.Path, r.Body, nil); err != nil {
			if r.Path == "/snapshot/load" {
				return fmt.Errorf("%w: %w", err, engine.ErrBadTemplate)
			}
			return err
		}
	}
	return nil
}

// TemplateSealer is a Launcher that seals a jailed template VM's
// snapshot (roothelper.Client implements it): SealTemplate copies the
// memory and state files the VM c wrote in its chroot (TemplateMemory,
// TemplateSnapshot) into new files of root's, read-only, in the template
// directory, the parent of c.ChrootBase. A Launcher that places
// those sealed files in a clone's jail (JailFile names TemplateMemory,
// TemplateSnapshot) implements it too.
//
// Why sealed: a jailed Firecracker runs as the owner, who would own the
// template's files, so a compromised one holding a plain hard link could
// write the memory every later clone maps (and the template VM's own
// Firecracker, the owner's, could keep a handle on what it wrote: hence a
// copy, once per template). Sealed, a clone's jail gets
// hard links (the jail is in the VM's directory, the template in the
// cache, both under banger's home: one filesystem), costing no disk per
// clone; a copy per clone would cost the template's touched memory
// (80-150 MiB for a 512 MiB VM) in disk and time at every start, most of
// what a template saves (ext4 has no reflink).
type TemplateSealer interface {
	SealTemplate(ctx context.Context, c JailerConfig) error
}

// refuseJailed refuses templates under the jailer unless a Launcher that
// seals them starts it: a daemon running as root stages jails itself and
// has no sealing of its own yet.
func (e *Engine) refuseJailed() error {
	if !e.cfg.UseJailer {
		return nil
	}
	if _, ok := e.cfg.Launcher.(TemplateSealer); !ok {
		return fmt.Errorf("templates under the jailer need the root helper (a daemon running as its owner) to seal them; this daemon starts the jailer itself: %w", errdefs.ErrFailedPrecondition)
	}
	return nil
}

// jailed reports whether the engine runs Firecracker under the jailer
// through a Launcher (the only jailed way templates are made).
func (e *Engine) jailed() bool { return e.cfg.UseJailer && e.cfg.Launcher != nil }

// Chroot paths of a jailed template's files, as its Firecracker and its
// clones' see them.
const (
	jailMemory   = "/" + TemplateMemory
	jailSnapshot = "/" + TemplateSnapshot
)

// StartTemplate boots spec like Start, its drives and vsock socket at
// paths relative to spec.Dir so that clones reopen their own. Firecracker
// keeps guest memory anonymous until SaveTemplate writes it into dir. A
// NIC needs a tap (Firecracker has no NIC without one): a throwaway the
// caller removes once the template is saved, since clones are given their
// own. See engine.Templater.
func (e *Engine) StartTemplate(ctx context.Context, spec engine.Spec, dir string) (engine.Instance, error) {
	inst, err := e.startTemplate(ctx, spec, dir)
	if err != nil {
		return nil, fmt.Errorf("start template vm %s: %w", spec.ID, err)
	}
	return inst, nil
}

func (e *Engine) startTemplate(ctx context.Context, spec engine.Spec, dir string) (*Instance, error) {
	if err := e.refuseJailed(); err != nil {
		return nil, err
	}
	// In a jail the drives and the vsock socket have the same
	// chroot-relative paths in every VM (/vda, /v.sock): the snapshot
	// records those, and each clone reopens its own.
	mode := startMode{relative: !e.jailed()}
	if n := spec.Net; n != nil {
		if n.Detached || n.TapName == "" {
			// Firecracker opens a NIC's tap by name at boot: a template
			// VM's NIC needs one (engine.Features.TemplateTap).
			return nil, fmt.Errorf("a Firecracker template's NIC needs a tap to open (Firecracker has no NIC without a host side): %w", errdefs.ErrInvalidArgument)
		}
		// Refused here, not only at clone time: a template no clone
		// could load is of no use.
		mode.minVersion, mode.minWhy = NetworkOverridesVersion, "templates of VMs with a NIC (/snapshot/load network_overrides)"
	}
	for _, f := range []string{TemplateMemory, TemplateSnapshot, TemplateSnapshot + ".tmp"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	return e.start(ctx, spec, mode)
}

// SaveTemplate pauses the VM (PATCH /vm), writes a full snapshot into dir
// (PUT /snapshot/create) and ends the process. See engine.Templater.
func (e *Engine) SaveTemplate(ctx context.Context, ei engine.Instance, dir string) error {
	inst, ok := ei.(*Instance)
	if !ok {
		return errors.New("save template: not a Firecracker instance")
	}
	// The drive links of the template VM point at its scratch disks,
	// which the caller removes: they are of no use once it has ended.
	defer removeDriveLinks(filepath.Dir(inst.st.PIDFile))
	if err := inst.saveTemplate(ctx, dir); err != nil {
		_ = inst.Kill()
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = inst.Wait(wctx)
		inst.Cleanup()
		os.Remove(filepath.Join(dir, TemplateSnapshot+".tmp"))
		return fmt.Errorf("save template of vm %s: %w", inst.ID, err)
	}
	return nil
}

func removeDriveLinks(vmDir string) {
	links, _ := filepath.Glob(filepath.Join(vmDir, driveLinkPrefix+"*"))
	for _, l := range links {
		os.Remove(l)
	}
}

func (i *Instance) saveTemplate(ctx context.Context, dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if i.st.JailID != "" {
		return i.saveJailedTemplate(ctx, dir)
	}
	state := filepath.Join(dir, TemplateSnapshot)
	tmp := state + ".tmp"
	mem := filepath.Join(dir, TemplateMemory)
	if err := i.snapshot(ctx, tmp, mem); err != nil {
		return err
	}
	// Firecracker has no quit: the paused template VM is of no further use.
	if err := i.Kill(); err != nil {
		return err
	}
	if err := i.Wait(ctx); err != nil {
		return err
	}
	i.Cleanup()
	for _, f := range []string{mem, tmp} {
		if err := proc.SyncFile(f); err != nil {
			return err
		}
	}
	return os.Rename(tmp, state)
}

// snapshot pauses the VM (PATCH /vm) and writes a full snapshot of it
// to the paths given, as Firecracker sees them.
func (i *Instance) snapshot(ctx context.Context, state, mem string) error {
	if err := i.api.do(ctx, http.MethodPatch, "/vm", vmStateBody{State: "Paused"}, nil); err != nil {
		return err
	}
	return i.api.do(ctx, http.MethodPut, "/snapshot/create", snapshotCreateBody{
		SnapshotType: "Full", SnapshotPath: state, MemFilePath: mem,
	}, nil)
}

// saveJailedTemplate has the template VM write its snapshot into its
// chroot, has the Launcher seal it into dir (TemplateSealer) and ends the
// VM, which removes its jail (and the unsealed snapshot with it).
func (i *Instance) saveJailedTemplate(ctx context.Context, dir string) error {
	sealer, ok := i.launcher.(TemplateSealer)
	if !ok {
		return errors.New("a jailed template needs a Launcher that seals it")
	}
	c := JailerConfig{ID: i.st.JailID, ChrootBase: filepath.Dir(filepath.Dir(i.st.JailDir))}
	if filepath.Dir(c.ChrootBase) != dir {
		return fmt.Errorf("template vm's jail %s is not in the template directory %s", c.ChrootBase, dir)
	}
	if err := i.snapshot(ctx, jailSnapshot, jailMemory); err != nil {
		return err
	}
	if err := sealer.SealTemplate(ctx, c); err != nil {
		return err
	}
	if err := i.Kill(); err != nil {
		return err
	}
	return i.Wait(ctx)
}

// StartClone starts a fresh Firecracker in spec.Dir and restores the
// template's snapshot with resume_vm: memory mapped privately from
// dir/memory (mem_backend File), the template's files never written. The
// clone's disks are reached through its own drive symlinks, its NIC
// through its own tap (network_overrides); the snapshot reset the vsock
// device, so the host connects to the agent afresh. See
// engine.Templater.
func (e *Engine) StartClone(ctx context.Context, spec engine.Spec, dir string) (engine.Instance, error) {
	inst, err := e.startClone(ctx, spec, dir)
	if err != nil {
		return nil, fmt.Errorf("start vm %s from template %s: %w", spec.ID, dir, err)
	}
	inst.Log.Info("vm started from template", "template", dir, "pid", inst.PID())
	return inst, nil
}

func (e *Engine) startClone(ctx context.Context, spec engine.Spec, dir string) (*Instance, error) {
	if err := e.refuseJailed(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	mem, state := filepath.Join(dir, TemplateMemory), filepath.Join(dir, TemplateSnapshot)
	if err := proc.CheckTemplate(mem, state, spec.MemoryMiB); err != nil {
		return nil, err
	}
	mode := startMode{relative: true, load: &snapshotLoadBody{
		SnapshotPath: state,
		MemBackend:   memoryBackendBody{BackendType: "File", BackendPath: mem},
		ResumeVM:     true,
	}}
	if e.jailed() {
		// The Launcher links the sealed files into the clone's jail.
		mode.relative = false
		mode.templateFiles = []JailFile{{Name: TemplateMemory, Path: mem}, {Name: TemplateSnapshot, Path: state}}
		mode.load.SnapshotPath, mode.load.MemBackend.BackendPath = jailSnapshot, jailMemory
	}
	if spec.Net != nil {
		// The snapshot names the template's tap; the clone's NIC is
		// backed by its own.
		mode.load.NetworkOverrides = []networkOverrideBody{{IfaceID: nicIface, HostDevName: spec.Net.TapName}}
		mode.minVersion, mode.minWhy = NetworkOverridesVersion, "clones of VMs with a NIC (/snapshot/load network_overrides)"
	}
	return e.start(ctx, spec, mode)
}
