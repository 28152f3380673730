package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/crashpoint"
	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/names"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/store"
	"github.com/bangervm/banger/internal/undo"
)

// Create makes a VM and, unless req.NoStart, boots it. On any failure
// everything made so far is removed: no record, no directory, no process.
// Until it succeeds the record says creating, so a daemon killed during
// Create has its next start roll the VM back the same way (Reconcile).
func (m *Manager) Create(ctx context.Context, req api.CreateVMRequest, progress func(api.Event)) (api.VM, error) {
	if progress == nil {
		progress = func(api.Event) {}
	}
	d := m.cfg.Settings.VM
	if req.VCPU == 0 {
		req.VCPU = d.VCPU
	}
	if req.MemoryMiB == 0 {
		req.MemoryMiB = d.MemoryMB
	}
	if req.DiskBytes == 0 {
		n, err := config.ParseSize(d.DiskSize)
		if err != nil {
			return api.VM{}, fmt.Errorf("config vm.disk_size: %w", err)
		}
		req.DiskBytes = n
	}
	if req.DiskBytes < 64<<20 {
		return api.VM{}, fmt.Errorf("disk size %d bytes: use at least 64M: %w", req.DiskBytes, errdefs.ErrInvalidArgument)
	}
	if err := m.checkSize(req.VCPU, req.MemoryMiB); err != nil {
		return api.VM{}, err
	}
	if req.Name != "" {
		if err := names.Validate("vm", req.Name); err != nil {
			return api.VM{}, err
		}
		if _, err := m.cfg.DB.GetVM(ctx, req.Name); err == nil {
			return api.VM{}, fmt.Errorf("vm %q exists: choose another --name or delete it (banger vm delete %s): %w", req.Name, req.Name, errdefs.ErrAlreadyExists)
		}
	}
	if err := api.ValidateLabels(req.Labels); err != nil {
		return api.VM{}, err
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	if req.TTLSeconds < 0 || ttl > api.MaxTTL {
		return api.VM{}, fmt.Errorf("time-to-live %ds: use 1s to %v: %w", req.TTLSeconds, api.MaxTTL, errdefs.ErrInvalidArgument)
	}
	mode, err := m.netMode(req.Net)
	if err != nil {
		return api.VM{}, err
	}
	engName, _, err := m.cfg.Choose(req.Engine)
	if err != nil {
		return api.VM{}, err
	}
	img, err := m.resolveImage(ctx, req.Image, progress)
	if err != nil {
		return api.VM{}, err
	}
	kname := req.Kernel
	if kname == "" {
		kname = img.Kernel
	}
	k, err := m.resolveKernel(ctx, kname, progress)
	if err != nil {
		return api.VM{}, err
	}
	spJSON, _ := json.Marshal(spec{ImageRootFS: img.RootFS, Config: img.Config})
	rec := store.VM{
		ID: newID(), Name: req.Name, Image: img.Name, Kernel: k.Name, Engine: engName,
		VCPU: req.VCPU, MemoryMiB: req.MemoryMiB, DiskBytes: req.DiskBytes, State: api.VMCreating,
		SpecJSON: string(spJSON), CreatedAt: time.Now(), Net: mode, Labels: req.Labels,
	}
	if ttl > 0 {
		// Absolute, in the record: a restarted daemon keeps the deadline.
		rec.ExpiresAt = rec.CreatedAt.Add(ttl)
	}
	rec.Dir = filepath.Join(m.vmsDir(), rec.ID)
	// The record, with the directory's name and the address slot, exists
	// before the directory, the tap and the rules.
	m.netMu.Lock()
	if mode != api.NetNone {
		if rec.NetIndex, err = m.cfg.DB.FreeNetIndex(ctx); err == nil && rec.NetIndex-1 > network.MaxIndex {
			err = fmt.Errorf("all %d addresses of %s are taken: delete some VMs: %w", network.MaxIndex+1, m.cfg.Network.Subnet, errdefs.ErrFailedPrecondition)
		}
	}
	for try := 0; err == nil; try++ {
		if req.Name == "" {
			rec.Name = friendlyName()
		}
		err = m.cfg.DB.PutVM(ctx, rec)
		if err == nil || req.Name != "" || !errdefs.IsAlreadyExists(err) || try > 20 {
			break
		}
	}
	m.netMu.Unlock()
	if err != nil {
		return api.VM{}, err
	}
	h := m.handle(rec.ID)
	h.lock.Lock()
	defer h.lock.Unlock()
	var u undo.Stack
	u.Push("record", func(ctx context.Context) error {
		m.forget(rec.ID)
		return m.cfg.DB.DeleteVM(ctx, rec.ID)
	})
	crashpoint.At("create.recorded")
	fail := func(cause error) (api.VM, error) {
		m.rollback(ctx, &u, rec)
		return api.VM{}, cause
	}
	progress(api.Event{Phase: "disk", Message: "creating disk"})
	u.Push("directory", func(context.Context) error { return os.RemoveAll(rec.Dir) })
	if err := m.makeDisk(ctx, rec); err != nil {
		return fail(err)
	}
	u.Push("host key", func(context.Context) error { return m.unpin(rec) })
	if err := m.makeHostKey(rec); err != nil {
		return fail(err)
	}
	crashpoint.At("create.disk")
	if req.NoStart {
		if err := m.setState(ctx, &rec, api.VMCreated, ""); err != nil {
			return fail(err)
		}
	} else if err := m.start(ctx, &rec, h, &u, progress, startOptions{Cold: req.Cold}); err != nil {
		return fail(err)
	}
	u.Release()
	m.log.Info("vm created", "vm", rec.ID, "name", rec.Name, "image", rec.Image, "kernel", rec.Kernel, "started", !req.NoStart)
	return m.toAPI(rec), nil
}

// makeDisk creates the VM's own disk: a sparse file with an empty ext4,
// made in constant time whatever the size (lazy inode tables and journal).
func (m *Manager) makeDisk(ctx context.Context, v store.VM) error {
	if err := os.Mkdir(v.Dir, 0o700); err != nil {
		return fmt.Errorf("vm dir: %w", err)
	}
	empty := filepath.Join(v.Dir, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		return err
	}
	defer os.Remove(empty)
	disk := filepath.Join(v.Dir, DiskFile)
	f, err := os.OpenFile(disk, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create disk: %w", err)
	}
	size := (v.DiskBytes + 4095) &^ 4095
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return fmt.Errorf("create disk: %w", err)
	}
	if err := hostcmd.Mke2fs(ctx, hostcmd.Mke2fsConfig{Dir: empty, Output: disk, SizeBytes: size, Label: "banger-rw"}); err != nil {
		return fmt.Errorf("format disk: %w", err)
	}
	return nil
}

// resolveImage finds the image, pulling the configured default on first use.
func (m *Manager) resolveImage(ctx context.Context, name string, progress func(api.Event)) (api.Image, error) {
	return resolve(ctx, name, m.cfg.Settings.DefaultImage, "image", m.cfg.Images.Get,
		func(ref string) (api.Image, error) {
			return m.cfg.Images.Pull(ctx, api.PullImageRequest{Ref: ref}, progress)
		}, progress, "pull it first (banger image pull REF --name %[1]s) or see banger image list")
}

// resolveKernel finds the kernel, pulling the configured default on first use.
func (m *Manager) resolveKernel(ctx context.Context, name string, progress func(api.Event)) (api.Kernel, error) {
	return resolve(ctx, name, m.cfg.Settings.DefaultKernel, "kernel", m.cfg.Kernels.Get,
		func(ref string) (api.Kernel, error) {
			return m.cfg.Kernels.Pull(ctx, api.PullKernelRequest{Ref: ref}, progress)
		}, progress, "import or pull it first (banger kernel pull debian-cloud) or see banger kernel list")
}

// resolve gets what (an image or a kernel) by name, "" meaning def; def
// itself is pulled on first use. Anything else missing is an ErrNotFound
// error ending in fix (a format whose %[1]s is the name).
func resolve[T any](ctx context.Context, name, def, what string, get func(context.Context, string) (T, error),
	pull func(ref string) (T, error), progress func(api.Event), fix string) (T, error) {
	if name == "" {
		name = def
	}
	v, err := get(ctx, name)
	if errdefs.IsNotFound(err) && name == def {
		progress(api.Event{Phase: what, Message: "pulling default " + what + " " + name})
		return pull(name)
	}
	if errdefs.IsNotFound(err) {
		return v, fmt.Errorf("%s %q not found: %s: %w", what, name, fmt.Sprintf(fix, name), errdefs.ErrNotFound)
	}
	return v, err
}
