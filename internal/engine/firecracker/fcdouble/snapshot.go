package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
)

// The snapshot API (snapshot-support.md), on QEMU: the double keeps every
// guest's RAM in a shared file, so /snapshot/create saves QEMU's device
// state with x-ignore-shared (qemu.SaveState) after a header line that
// holds the boot plan, and copies the RAM file; /snapshot/load starts QEMU
// with the plan's devices, RAM mapped privately from the memory file, and
// loads the state after the header (qemu.LoadState).

// snapshotMagic starts the header line of the double's state files.
const snapshotMagic = "fcdouble-snapshot-1"

// maxHeader bounds the header line.
const maxHeader = 1 << 16

// snapshotHeader is the state file's first line.
type snapshotHeader struct {
	Magic     string   `json:"magic"`
	Plan      bootPlan `json:"plan"`
	VsockPath string   `json:"vsock_path,omitempty"`
	VsockCID  int64    `json:"vsock_cid,omitempty"`
}

type vmBody struct {
	State *string `json:"state"`
}

type snapshotCreateBody struct {
	MemFilePath  *string `json:"mem_file_path"`
	SnapshotPath *string `json:"snapshot_path"`
	SnapshotType *string `json:"snapshot_type"`
}

type memoryBackend struct {
	BackendType *string `json:"backend_type"`
	BackendPath *string `json:"backend_path"`
}

type networkOverride struct {
	IfaceID     *string `json:"iface_id"`
	HostDevName *string `json:"host_dev_name"`
}

type snapshotLoadBody struct {
	SnapshotPath        *string           `json:"snapshot_path"`
	MemFilePath         *string           `json:"mem_file_path"`
	MemBackend          *memoryBackend    `json:"mem_backend"`
	EnableDiffSnapshots bool              `json:"enable_diff_snapshots"`
	TrackDirtyPages     bool              `json:"track_dirty_pages"`
	ResumeVM            bool              `json:"resume_vm"`
	NetworkOverrides    []networkOverride `json:"network_overrides"`
	VsockOverride       *struct {
		UDSPath *string `json:"uds_path"`
	} `json:"vsock_override"`
	ClockRealtime bool   `json:"clock_realtime"`
	HugePages     string `json:"huge_pages"`
}

// patchVM is PATCH /vm: pause or resume a started VM.
func (v *vmm) patchVM(r *http.Request) error {
	var b vmBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.State == nil {
		return missing("state")
	}
	if err := oneOf("state", *b.State, "Paused", "Resumed"); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.started {
		return badRequest(errPreBoot)
	}
	pause := *b.State == "Paused"
	op := v.m.Resume
	if pause {
		op = v.m.Pause
	}
	if err := op(); err != nil {
		return badRequest("Failed to %s the microVM: %v", map[bool]string{true: "pause", false: "resume"}[pause], err)
	}
	v.paused = pause
	return nil
}

func (v *vmm) putSnapshotCreate(r *http.Request, _ string) error {
	var b snapshotCreateBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.SnapshotPath == nil {
		return missing("snapshot_path")
	}
	if b.MemFilePath == nil {
		return missing("mem_file_path")
	}
	if b.SnapshotType != nil {
		if err := oneOf("snapshot_type", *b.SnapshotType, "Full", "Diff"); err != nil {
			return err
		}
		if *b.SnapshotType == "Diff" {
			return badRequest("Create snapshot error: fcdouble makes full snapshots only.")
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.started {
		return badRequest(errPreBoot)
	}
	if !v.paused {
		return badRequest("Create snapshot error: the microVM must be paused first (PATCH /vm).")
	}
	// The paths as the API gave them: Firecracker records those, and a
	// jailed clone reopens them in its own chroot.
	h := snapshotHeader{Magic: snapshotMagic, Plan: jailPlan(v.plan, outJail)}
	if v.vsock != nil {
		h.VsockPath, h.VsockCID = outJail(v.vsock.path), v.vsockCID
	}
	line, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if err := v.m.Snapshot(inJail(*b.SnapshotPath), inJail(*b.MemFilePath), line); err != nil {
		return badRequest("Create snapshot error: %v", err)
	}
	v.log.Info("Snapshot created")
	return nil
}

func (v *vmm) putSnapshotLoad(r *http.Request, _ string) error {
	var b snapshotLoadBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.SnapshotPath == nil {
		return missing("snapshot_path")
	}
	var mem string
	switch {
	case b.MemBackend != nil && b.MemFilePath != nil:
		return badRequest("An error occurred when deserializing the json body of a request: too many fields: mem_file_path and mem_backend are exclusive.")
	case b.MemFilePath != nil:
		mem = *b.MemFilePath
	case b.MemBackend != nil:
		if b.MemBackend.BackendType == nil {
			return missing("backend_type")
		}
		if b.MemBackend.BackendPath == nil {
			return missing("backend_path")
		}
		if err := oneOf("backend_type", *b.MemBackend.BackendType, "File", "Uffd"); err != nil {
			return err
		}
		if *b.MemBackend.BackendType != "File" {
			return badRequest("Load snapshot error: fcdouble has the File memory backend only.")
		}
		mem = *b.MemBackend.BackendPath
	default:
		return badRequest("An error occurred when deserializing the json body of a request: missing field: either mem_backend or mem_file_path is required.")
	}
	for _, o := range b.NetworkOverrides {
		if o.IfaceID == nil {
			return missing("iface_id")
		}
		if o.HostDevName == nil {
			return missing("host_dev_name")
		}
	}
	unlock, err := v.preBoot()
	if err != nil {
		return err
	}
	defer unlock()
	if v.configured {
		return badRequest("Loading a microVM snapshot not allowed after configuring boot-specific resources.")
	}
	state, mem := inJail(*b.SnapshotPath), inJail(mem)
	h, offset, err := readSnapshotHeader(state)
	if err == nil {
		_, err = os.Stat(mem)
	}
	if err != nil {
		v.m.Abort()
		return badRequest("Load snapshot error: Failed to restore from snapshot: %v", err)
	}
	h.Plan = jailPlan(h.Plan, inJail)
	vsock := inJail(h.VsockPath)
	if o := b.VsockOverride; o != nil && o.UDSPath != nil {
		vsock = inJail(*o.UDSPath)
	}
	if vsock != "" {
		br, err := listenBridge(vsock, v.m.AgentSocket, v.log)
		if err != nil {
			v.m.Abort()
			return badRequest("Load snapshot error: vsock: %v", err)
		}
		v.vsock, v.vsockCID = br, h.VsockCID
	}
	// The initrd was loaded into the RAM the snapshot holds; its file may
	// be gone.
	plan := h.Plan
	plan.Initrd = ""
	if err := overrideNICs(&plan, b.NetworkOverrides); err != nil {
		v.m.Abort()
		return badRequest("Load snapshot error: %v", err)
	}
	if err := v.m.Restore(plan, state, mem, offset, b.ResumeVM); err != nil {
		return badRequest("Load snapshot error: Failed to restore from snapshot: %v", err)
	}
	v.started, v.paused, v.plan = true, !b.ResumeVM, plan
	v.log.Info("Snapshot loaded")
	return nil
}

// readSnapshotHeader reads and checks the header line of state; offset is
// its length with the newline.
func readSnapshotHeader(state string) (snapshotHeader, int64, error) {
	var h snapshotHeader
	f, err := os.Open(state)
	if err != nil {
		return h, 0, err
	}
	defer f.Close()
	line, err := bufio.NewReader(io.LimitReader(f, maxHeader)).ReadBytes('\n')
	if err != nil {
		return h, 0, fmt.Errorf("%s is not a snapshot state file (no header line)", state)
	}
	if err := json.Unmarshal(line, &h); err != nil || h.Magic != snapshotMagic {
		return h, 0, errors.New("snapshot state file " + state + ": bad header (CRC mismatch)")
	}
	return h, int64(len(line)), nil
}

// jailPlan returns p with its file paths mapped by f (inJail, outJail).
func jailPlan(p bootPlan, f func(string) string) bootPlan {
	p.Kernel = f(p.Kernel)
	if p.Initrd != "" {
		p.Initrd = f(p.Initrd)
	}
	p.Drives = slices.Clone(p.Drives)
	for i := range p.Drives {
		p.Drives[i].Path = f(p.Drives[i].Path)
	}
	return p
}

// overrideNICs backs the plan's NIC by the tap each override names: the
// snapshot's own tap (the template's) is never opened for it.
func overrideNICs(p *bootPlan, overrides []networkOverride) error {
	for _, o := range overrides {
		if p.Net == nil || p.Net.ID != *o.IfaceID {
			return fmt.Errorf("Invalid network override: the snapshot has no network interface %q", *o.IfaceID)
		}
		n := *p.Net
		n.HostDev = *o.HostDevName
		p.Net = &n
	}
	return nil
}
