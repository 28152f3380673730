package vm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/crashpoint"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/network"
	"github.com/bangervm/banger/internal/store"
	"github.com/bangervm/banger/internal/vmtemplate"
)

// startOptions are a start's choices beyond the VM's record.
type startOptions struct {
	// Cold boots even when a template of the VM's shape exists.
	Cold bool
}

// Files in a VM's or a template's directory for templates.
const (
	StartedFromFile = "started-from" // "cold" or "template ID", rewritten at each start
	templateDisk    = "disk.img"     // a template's stand-in for the VM's disk: sparse, same size
)

// templateMAC is a template's NIC address (locally administered); its
// guest never uses it, clones replace it before the link is up.
const templateMAC = "02:62:61:6e:67:00"

// templateMakeTimeout bounds making a template in the background.
const templateMakeTimeout = 5 * time.Minute

// bootFromTemplate starts the VM's engine process, from a template of its
// shape when there is one, and returns once its agent has its identity
// and the boot has finished. A template that fails to start, or whose
// guest does not come up, is discarded and the VM boots cold; a cold boot
// of a shape without a template makes one in the background. from is
// "cold" or "template ID". On error no engine process is left.
func (m *Manager) bootFromTemplate(ctx context.Context, v *store.VM, h *handle, eng engine.Engine, es engine.Spec, id agentproto.Identity, k api.Kernel, sp spec, opts startOptions) (engine.Instance, string, error) {
	choice := m.chooseTemplate(ctx, eng, es, k, sp, opts)
	if choice.found != nil {
		t := *choice.found
		inst, err := m.boot(ctx, v, h, func() (engine.Instance, error) { return choice.tp.StartClone(ctx, es, t.Dir) }, id)
		if err == nil {
			m.log.Info("vm started from template", "vm", v.ID, "template", t.ID)
			if err := m.cfg.Templates.Touch(t.ID); err != nil {
				m.log.Warn("record the template's use", "template", t.ID, "err", err)
			}
			return inst, "template " + t.ID, nil
		}
		if ctx.Err() != nil {
			return nil, "", err
		}
		m.log.Warn("start from template failed: discarding the template, booting cold", "vm", v.ID, "template", t.ID, "err", err)
		if rerr := m.cfg.Templates.Remove(t.ID); rerr != nil {
			m.log.Warn("discard template", "template", t.ID, "err", rerr)
		}
		choice.make = true
	} else {
		m.log.Info("booting cold", "vm", v.ID, "reason", choice.reason)
	}
	inst, err := m.boot(ctx, v, h, func() (engine.Instance, error) {
		inst, err := eng.Start(ctx, es)
		if err != nil {
			return nil, fmt.Errorf("start vm %s: %w", v.Name, err)
		}
		return inst, nil
	}, id)
	if err != nil {
		return nil, "", err
	}
	if choice.make {
		m.makeTemplateLater(choice.tp, choice.key, es, k, sp)
	}
	return inst, "cold", nil
}

// boot runs start, then reaches the agent and gives it the VM's identity.
// On error the engine process is ended.
func (m *Manager) boot(ctx context.Context, v *store.VM, h *handle, start func() (engine.Instance, error), id agentproto.Identity) (engine.Instance, error) {
	inst, err := start()
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.setInstLocked(inst)
	h.stopping = false
	h.mu.Unlock()
	crashpoint.At("start.engine")
	fail := func(err error) (engine.Instance, error) {
		err = fmt.Errorf("vm %s did not boot: %w%s", v.Name, err, m.consoleTail(inst, v.Dir))
		if eerr := m.endInstance(ctx, h, inst); eerr != nil {
			err = errors.Join(err, eerr)
		}
		return nil, err
	}
	c, err := m.connectAgent(ctx, v, h, m.cfg.BootTimeout)
	if err != nil {
		return fail(err)
	}
	if err := m.identify(ctx, v, h, c, id); err != nil {
		return fail(err)
	}
	return inst, nil
}

// templateChoice is what chooseTemplate found.
type templateChoice struct {
	tp     engine.Templater
	key    vmtemplate.Key
	found  *vmtemplate.Template
	reason string // why no template is used
	make   bool   // make one after a cold boot
}

func (m *Manager) chooseTemplate(ctx context.Context, eng engine.Engine, es engine.Spec, k api.Kernel, sp spec, opts startOptions) templateChoice {
	var c templateChoice
	if m.cfg.Templates == nil {
		c.reason = "templates are off"
		return c
	}
	tp, ok := eng.(engine.Templater)
	if !ok {
		c.reason = "engine " + eng.Name() + " has no templates yet"
		return c
	}
	c.tp = tp
	f, err := eng.Features(ctx)
	if err != nil {
		c.reason = "engine features: " + err.Error()
		return c
	}
	if f.TemplatesOff != "" {
		// Known before anything is written: no template VM is attempted.
		c.reason = f.TemplatesOff
		return c
	}
	key, err := m.templateKey(eng.Name(), f, es, k, sp)
	if err != nil {
		c.reason = "template key: " + err.Error()
		return c
	}
	c.key = key
	t, err := m.cfg.Templates.Get(key)
	switch {
	case err != nil:
		c.reason = "no template of this shape yet"
		if !errdefs.IsNotFound(err) {
			c.reason = err.Error()
		}
		c.make = errdefs.IsNotFound(err)
	case opts.Cold:
		c.reason = "--cold"
	default:
		c.found = &t
	}
	return c
}

// templateKey is everything a clone of es must share with its template.
func (m *Manager) templateKey(engineName string, f engine.Features, es engine.Spec, k api.Kernel, sp spec) (vmtemplate.Key, error) {
	key := vmtemplate.Key{VCPU: es.VCPU, MemoryMiB: es.MemoryMiB, NIC: es.Net != nil}
	key.Engine = engineName + "/" + string(f.Accel)
	stat := func(p string) (vmtemplate.FileID, error) {
		id, err := vmtemplate.StatFile(p)
		if err != nil {
			return id, fmt.Errorf("template key: %w", err)
		}
		return id, nil
	}
	kfiles := []string{k.Vmlinux}
	if k.Initrd != "" {
		kfiles = append(kfiles, k.Initrd)
	}
	for _, p := range kfiles {
		id, err := stat(p)
		if err != nil {
			return key, err
		}
		key.Kernel = append(key.Kernel, id)
	}
	var err error
	if key.Agent, err = stat(m.cfg.AgentBinary); err != nil {
		return key, err
	}
	if key.Image, err = stat(sp.ImageRootFS); err != nil {
		return key, err
	}
	b, _ := json.Marshal(sp.Config)
	sum := sha256.Sum256(b)
	key.ImageConfig = hex.EncodeToString(sum[:8])
	for _, d := range es.Disks {
		id, err := stat(d.Path)
		if err != nil {
			return key, err
		}
		key.Disks = append(key.Disks, id.Size)
	}
	return key, nil
}

// makeTemplateLater makes the template of key in the background, once at
// a time per key.
func (m *Manager) makeTemplateLater(tp engine.Templater, key vmtemplate.Key, es engine.Spec, k api.Kernel, sp spec) {
	id := key.ID()
	m.mu.Lock()
	if m.templating == nil {
		m.templating = map[string]string{}
	}
	if _, busy := m.templating[id]; busy {
		m.mu.Unlock()
		return
	}
	m.templating[id] = ""
	m.mu.Unlock()
	m.spawn(func(ctx context.Context) {
		defer func() {
			m.mu.Lock()
			delete(m.templating, id)
			m.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(ctx, templateMakeTimeout)
		defer cancel()
		begin := time.Now()
		t, err := m.makeTemplate(ctx, tp, key, es, k, sp)
		if err != nil {
			m.log.Warn("make template", "template", id, "err", err)
			return
		}
		m.log.Info("template made", "template", t.ID, "took", time.Since(begin).Round(time.Millisecond), "bytes", t.SizeBytes)
		removed, err := m.cfg.Templates.Trim(t.ID)
		if len(removed) > 0 {
			m.log.Info("templates over template_cache_max removed, least recently used first", "removed", removed, "max_bytes", m.cfg.Templates.Max())
		}
		if err != nil {
			m.log.Warn("keep templates within template_cache_max", "err", err)
		}
	})
}

// makeTemplate boots a VM of es's shape to its agent's ready point and
// saves it. Its disks are es's image and a blank sparse file of the size
// of es's disk (the guest reads neither before its identity, and drops
// what it read while probing then); it has no identity of its own.
func (m *Manager) makeTemplate(ctx context.Context, tp engine.Templater, key vmtemplate.Key, es engine.Spec, k api.Kernel, sp spec) (vmtemplate.Template, error) {
	p, err := m.cfg.Templates.Create(key)
	if err != nil {
		return vmtemplate.Template{}, err
	}
	m.mu.Lock()
	m.templating[key.ID()] = p.Dir
	m.mu.Unlock()
	done := false
	defer func() {
		if !done {
			p.Abort()
		}
	}()
	if err := m.writeInitrdIn(p.Dir, k, sp); err != nil {
		return vmtemplate.Template{}, err
	}
	// A short id: a jailed template VM's jail path holds it twice
	// (<dir>/jail/firecracker/<id>/root), and its sockets' paths must
	// stay within 107 bytes, as a VM's (11-character id) do.
	ts := engine.Spec{
		ID: "tmpl-" + key.ID()[:8], Dir: p.Dir, VCPU: es.VCPU, MemoryMiB: es.MemoryMiB,
		Kernel: es.Kernel, Initrd: filepath.Join(p.Dir, InitrdFile), Cmdline: es.Cmdline,
	}
	for i, d := range es.Disks {
		if !d.ReadOnly {
			blank := filepath.Join(p.Dir, fmt.Sprintf("%s.%d", templateDisk, i))
			if err := blankFile(blank, key.Disks[i]); err != nil {
				return vmtemplate.Template{}, err
			}
			d.Path = blank
		}
		ts.Disks = append(ts.Disks, d)
	}
	if es.Net != nil {
		net, release, err := m.templateNIC(ctx, tp, key)
		if err != nil {
			return vmtemplate.Template{}, err
		}
		defer release()
		ts.Net = net
	}
	inst, err := tp.StartTemplate(ctx, ts, p.Dir)
	if err != nil {
		return vmtemplate.Template{}, err
	}
	stop := context.AfterFunc(ctx, func() { inst.Kill() })
	defer stop()
	if err := m.awaitReadyPoint(ctx, inst); err != nil {
		inst.Kill()
		// Waited for, so that its runtime files go first: a jail in the
		// template directory is root's, which Abort could not remove.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		inst.Wait(wctx)
		cancel()
		return vmtemplate.Template{}, fmt.Errorf("template vm did not reach its ready point: %w%s", err, m.consoleTail(inst, p.Dir))
	}
	if err := tp.SaveTemplate(ctx, inst, p.Dir); err != nil {
		return vmtemplate.Template{}, err
	}
	var scratch []string
	for i := range es.Disks {
		scratch = append(scratch, fmt.Sprintf("%s.%d", templateDisk, i))
	}
	t, err := p.Commit(append(scratch, InitrdFile)...)
	if err != nil {
		return vmtemplate.Template{}, err
	}
	done = true
	return t, nil
}

// templateNIC is the NIC of a template VM: the same device its clones
// get, with the template's MAC (a clone sets its own before the link is
// up). It has no host side, unless the engine needs one
// (engine.Features.TemplateTap): then a throwaway tap of the template's
// own name, bgr-t<key>, which no VM id (hex) can take; release removes
// it. That tap is a bridge port with no firewall rules of a VM, and the
// template's guest never brings its link up (that waits for an identity).
func (m *Manager) templateNIC(ctx context.Context, tp engine.Templater, key vmtemplate.Key) (*engine.NetSpec, func(), error) {
	detached := &engine.NetSpec{Detached: true, MAC: templateMAC}
	eng, ok := tp.(engine.Engine)
	if !ok {
		return detached, func() {}, nil
	}
	f, err := eng.Features(ctx)
	if err != nil {
		return nil, nil, err
	}
	if !f.TemplateTap {
		return detached, func() {}, nil
	}
	n := m.cfg.Network
	if n == nil {
		return nil, nil, errors.New("template with a NIC: host networking is off")
	}
	tap, err := network.TapName("t" + key.ID()[:10])
	if err != nil {
		return nil, nil, err
	}
	fd, err := n.Ops.CreateTap(ctx, tap, n.Bridge, n.OwnerUID)
	if err != nil {
		return nil, nil, fmt.Errorf("template tap: %w", err)
	}
	release := func() {
		if fd != nil {
			fd.Close()
		}
		if err := n.Ops.DeleteTap(context.WithoutCancel(ctx), tap); err != nil {
			m.log.Warn("remove template tap", "tap", tap, "err", err)
		}
	}
	return &engine.NetSpec{TapName: tap, TapFD: fd, MAC: templateMAC}, release, nil
}

// awaitReadyPoint waits until the agent answers and says it waits for
// its identity, then lets go of the channel.
func (m *Manager) awaitReadyPoint(ctx context.Context, inst engine.Instance) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.BootTimeout)
	defer cancel()
	conn, err := inst.DialAgent(ctx)
	if err != nil {
		return err
	}
	c, err := agentproto.Connect(ctx, conn, agentproto.ClientConfig{})
	if err != nil {
		return err
	}
	defer c.Close()
	info, err := c.Health(ctx)
	if err != nil {
		return err
	}
	if !info.AwaitingIdentity {
		return fmt.Errorf("agent %s does not stop at a ready point", info.AgentVersion)
	}
	return nil
}

func blankFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// recordStartedFrom notes how the VM started, for vm show.
func (m *Manager) recordStartedFrom(v store.VM, from string) error {
	if err := os.WriteFile(filepath.Join(v.Dir, StartedFromFile), []byte(from+"\n"), 0o600); err != nil {
		return fmt.Errorf("vm %s: %w", v.Name, err)
	}
	return nil
}

func startedFrom(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, StartedFromFile))
	if err != nil || len(b) > 64 {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Templates lists the stored templates.
func (m *Manager) Templates(ctx context.Context) ([]api.Template, error) {
	if m.cfg.Templates == nil {
		return nil, nil
	}
	ts, err := m.cfg.Templates.List()
	if err != nil {
		return nil, err
	}
	out := make([]api.Template, 0, len(ts))
	for _, t := range ts {
		at := api.Template{ID: t.ID, Engine: t.Key.Engine, Image: t.Key.Image.Path, VCPU: t.Key.VCPU,
			MemoryMiB: t.Key.MemoryMiB, NIC: t.Key.NIC, SizeBytes: t.SizeBytes, CreatedAt: t.CreatedAt, LastUsed: t.LastUsed,
			CacheMaxBytes: m.cfg.Templates.Max(), Dir: t.Dir}
		if len(t.Key.Kernel) > 0 {
			at.Kernel = t.Key.Kernel[0].Path
		}
		out = append(out, at)
	}
	return out, nil
}

// RemoveTemplate deletes a template by id (or unique prefix). VMs started
// from it run on: they hold its memory file open.
func (m *Manager) RemoveTemplate(ctx context.Context, id string) error {
	if m.cfg.Templates == nil {
		return fmt.Errorf("template %q: %w", id, errdefs.ErrNotFound)
	}
	return m.cfg.Templates.Remove(id)
}

// PruneTemplates removes stale and unfinished templates (not one being
// made).
func (m *Manager) PruneTemplates(ctx context.Context) (api.PruneTemplatesResult, error) {
	res := api.PruneTemplatesResult{Deleted: []string{}}
	if m.cfg.Templates == nil {
		return res, nil
	}
	deleted, err := m.cfg.Templates.Prune(func(dir string) bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, d := range m.templating {
			if d == dir {
				return true
			}
		}
		return false
	})
	res.Deleted = append(res.Deleted, deleted...)
	return res, err
}

// cleanTemplates ends the engine processes of templates an earlier daemon
// was making when it died (they run detached) and removes those and other
// unfinished templates.
func (m *Manager) cleanTemplates(ctx context.Context) {
	if m.cfg.Templates == nil {
		return
	}
	for _, dir := range m.cfg.Templates.Unfinished() {
		for _, eng := range m.cfg.Engines {
			inst, err := eng.Attach(ctx, engine.Spec{ID: "template", Dir: dir})
			if err != nil {
				continue
			}
			m.log.Info("ending the engine process of an unfinished template", "dir", dir, "pid", inst.PID())
			inst.Kill()
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			inst.Wait(wctx)
			cancel()
		}
	}
	if _, err := m.cfg.Templates.Prune(nil); err != nil {
		m.log.Warn("prune templates", "err", err)
	}
}
