package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
)

// templateSpec is testSpec without a NIC (TestTemplateWithNIC has one)
// in a fresh directory.
func templateSpec(t *testing.T) engine.Spec {
	spec := testSpec(t)
	spec.Net = nil
	return spec
}

// saveTestTemplate makes a template through the fake and returns its
// directory and the requests the template VM got.
func saveTestTemplate(t *testing.T, e *Engine, reqLog string) (string, []string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	spec := templateSpec(t)
	inst, err := e.StartTemplate(ctx, spec, dir)
	if err != nil {
		t.Fatalf("StartTemplate: %v", err)
	}
	if err := e.SaveTemplate(ctx, inst, dir); err != nil {
		t.Fatalf("SaveTemplate: %v", err)
	}
	if !inst.Exited() {
		t.Errorf("the template's process runs after SaveTemplate")
	}
	for _, f := range []string{TemplateMemory, TemplateSnapshot} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("template file: %v", err)
		}
	}
	if _, err := os.Lstat(filepath.Join(spec.Dir, driveLink(0))); err == nil {
		t.Errorf("the template VM's drive links are left after SaveTemplate")
	}
	reqs := readReqLog(t, reqLog)
	os.Remove(reqLog)
	return dir, reqs
}

// TestTemplateThroughSnapshotAPI: the template VM's drives and vsock are
// configured at paths relative to its directory, it is paused before a
// full snapshot is created into the template directory; a clone is a new
// process whose only requests are logger, metrics and /snapshot/load with
// a File memory backend and resume_vm, every request valid against
// firecracker.yaml and accepted in Firecracker's order. The clone runs
// and its agent channel is its own socket.
func TestTemplateThroughSnapshotAPI(t *testing.T) {
	bin, reqLog := fakeBinary(t)
	e := New(Config{Firecracker: bin, StartTimeout: 5 * time.Second, Logger: testLogger(t)})
	dir, reqs := saveTestTemplate(t, e, reqLog)

	var paths []string
	for _, r := range reqs {
		paths = append(paths, strings.Join(strings.Fields(r)[:2], " "))
	}
	want := []string{"GET /", "PUT /logger", "PUT /metrics", "PUT /machine-config", "PUT /boot-source",
		"PUT /drives/vda", "PUT /drives/vdb", "PUT /vsock", "PUT /actions", "PATCH /vm", "PUT /snapshot/create"}
	if got := slices.DeleteFunc(slices.Clone(paths), func(p string) bool { return p == "GET /" }); !slices.Equal(got, want[1:]) {
		t.Errorf("template requests:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want[1:], "\n"))
	}
	for _, r := range reqs {
		switch {
		case strings.HasPrefix(r, "PUT /drives/vda"):
			assertContains(t, r, `"path_on_host":"drive-vda"`)
		case strings.HasPrefix(r, "PUT /vsock"):
			assertContains(t, r, `"uds_path":"v.sock"`)
		case strings.HasPrefix(r, "PATCH /vm"):
			assertContains(t, r, `"state":"Paused"`)
		case strings.HasPrefix(r, "PUT /snapshot/create"):
			assertContains(t, r, `"snapshot_type":"Full"`)
			assertContains(t, r, fmt.Sprintf(`"mem_file_path":%q`, filepath.Join(dir, TemplateMemory)))
		}
	}

	ctx := context.Background()
	clone := templateSpec(t)
	inst, err := e.StartClone(ctx, clone, dir)
	if err != nil {
		t.Fatalf("StartClone: %v", err)
	}
	defer func() { inst.Kill(); inst.Wait(ctx) }()
	var got []string
	for _, r := range readReqLog(t, reqLog) {
		if !strings.HasPrefix(r, "GET / ") {
			got = append(got, r)
		}
	}
	if len(got) != 3 || !strings.HasPrefix(got[0], "PUT /logger") || !strings.HasPrefix(got[1], "PUT /metrics") || !strings.HasPrefix(got[2], "PUT /snapshot/load") {
		t.Fatalf("clone requests:\n%s\nwant logger, metrics, snapshot/load", strings.Join(got, "\n"))
	}
	assertContains(t, got[2], fmt.Sprintf(`"mem_backend":{"backend_type":"File","backend_path":%q}`, filepath.Join(dir, TemplateMemory)))
	assertContains(t, got[2], `"resume_vm":true`)
	if st, err := inst.Status(ctx); err != nil || st != engine.StateRunning {
		t.Errorf("clone Status = %q, %v; want running", st, err)
	}
	// A restarted daemon re-attaches to a clone as to any VM.
	att, err := New(Config{Firecracker: bin}).Attach(ctx, engine.Spec{ID: clone.ID, Dir: clone.Dir})
	if err != nil || att.PID() != inst.PID() {
		t.Errorf("Attach to the clone: %v (pid %v, want %d)", err, att, inst.PID())
	}
	if l, err := os.Readlink(filepath.Join(clone.Dir, driveLink(1))); err != nil || l != clone.Disks[1].Path {
		t.Errorf("clone's drive vdb link = %q, %v; want its own disk %s", l, err, clone.Disks[1].Path)
	}
	c, err := inst.DialAgent(ctx)
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	defer c.Close()
	c.Write([]byte("ping\n"))
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping\n" {
		t.Errorf("agent channel echo = %q, %v", b, err)
	}
	if st, err := os.Stat(filepath.Join(clone.Dir, VsockSocket)); err != nil || st.Mode().Type() != os.ModeSocket {
		t.Errorf("the clone's vsock socket is not in its directory: %v", err)
	}
}

func assertContains(t *testing.T, s, sub string) {
	t.Helper()
	if !strings.Contains(s, sub) {
		t.Errorf("%s\ndoes not contain %s", s, sub)
	}
}

// TestCloneSurfacesErrors: an injected API error names the request and
// Firecracker's message and leaves no process or file; a failed load (and
// a missing or mis-sized template) is ErrBadTemplate, a failure before
// it is not.
func TestCloneSurfacesErrors(t *testing.T) {
	bin, reqLog := fakeBinary(t)
	e := New(Config{Firecracker: bin, StartTimeout: 5 * time.Second})
	dir, _ := saveTestTemplate(t, e, reqLog)

	for _, c := range []struct {
		req, msg string
		bad      bool
	}{
		{"PUT /logger", "Logger error: Failed to open target file", false},
		{"PUT /snapshot/load", "Load snapshot error: Failed to restore from snapshot: Failed to get snapshot state from file", true},
	} {
		t.Run(strings.TrimPrefix(c.req, "PUT /"), func(t *testing.T) {
			t.Setenv("BANGER_FAKE_FC_FAULTS", c.req+"=400="+c.msg)
			spec := templateSpec(t)
			inst, err := e.StartClone(context.Background(), spec, dir)
			if err == nil {
				inst.Kill()
				t.Fatal("StartClone succeeded")
			}
			var ae *APIError
			if !errors.As(err, &ae) || ae.Fault != c.msg || !strings.Contains(err.Error(), c.req) {
				t.Errorf("StartClone: %v; want the APIError of %s", err, c.req)
			}
			if errors.Is(err, engine.ErrBadTemplate) != c.bad {
				t.Errorf("StartClone: %v; ErrBadTemplate %v, want %v", err, !c.bad, c.bad)
			}
			assertNothingLeft(t, spec)
		})
	}

	t.Run("corrupt", func(t *testing.T) {
		bad := t.TempDir()
		os.WriteFile(filepath.Join(bad, TemplateSnapshot), []byte("not a snapshot"), 0o600)
		os.Link(filepath.Join(dir, TemplateMemory), filepath.Join(bad, TemplateMemory))
		spec := templateSpec(t)
		if _, err := e.StartClone(context.Background(), spec, bad); !errors.Is(err, engine.ErrBadTemplate) {
			t.Errorf("StartClone of a corrupt snapshot: %v, want ErrBadTemplate", err)
		}
		assertNothingLeft(t, spec)
	})
	t.Run("other shape", func(t *testing.T) {
		spec := templateSpec(t)
		spec.MemoryMiB = 512
		if _, err := e.StartClone(context.Background(), spec, dir); !errors.Is(err, engine.ErrBadTemplate) {
			t.Errorf("StartClone with other memory: %v, want ErrBadTemplate", err)
		}
		assertNothingLeft(t, spec)
	})
}

// TestSaveTemplateSurfacesErrors: a failed pause or snapshot names the
// request, ends the template's process and leaves no snapshot.
func TestSaveTemplateSurfacesErrors(t *testing.T) {
	for _, req := range []string{"PATCH /vm", "PUT /snapshot/create"} {
		t.Run(req, func(t *testing.T) {
			bin, _ := fakeBinary(t, "BANGER_FAKE_FC_FAULTS="+req+"=400=Injected failure")
			e := New(Config{Firecracker: bin, StartTimeout: 5 * time.Second})
			ctx := context.Background()
			dir := t.TempDir()
			spec := templateSpec(t)
			inst, err := e.StartTemplate(ctx, spec, dir)
			if err != nil {
				t.Fatalf("StartTemplate: %v", err)
			}
			err = e.SaveTemplate(ctx, inst, dir)
			if err == nil || !strings.Contains(err.Error(), req) || !strings.Contains(err.Error(), "Injected failure") {
				t.Errorf("SaveTemplate: %v; want the error of %s", err, req)
			}
			if !inst.Exited() {
				t.Errorf("the template's process runs after a failed save")
			}
			if _, err := os.Stat(filepath.Join(dir, TemplateSnapshot)); err == nil {
				t.Errorf("a snapshot is left after a failed save")
			}
			assertNothingLeft(t, spec, StateFile)
		})
	}
}

// launcherOnly is a Launcher that cannot seal templates; sealingLauncher
// one that can. Neither is called.
type launcherOnly struct{ Launcher }

type sealingLauncher struct{ launcherOnly }

func (sealingLauncher) SealTemplate(context.Context, JailerConfig) error { return nil }

// TestTemplateRefusedJailed: jailed without a Launcher that seals
// templates (a daemon starting the jailer itself, as root), templates are
// refused before anything starts, so the caller boots cold; Features says
// so up front, so that the caller attempts no template at all. With one
// (the root helper), they are on.
func TestTemplateRefusedJailed(t *testing.T) {
	bin, _ := fakeBinary(t)
	ctx := context.Background()
	jailed := New(Config{Firecracker: bin, UseJailer: true, Jailer: bin})
	if f, _ := jailed.Features(ctx); !strings.Contains(f.TemplatesOff, "jailer") {
		t.Errorf("jailed Features.TemplatesOff = %q; want the jailer named", f.TemplatesOff)
	}
	if f, _ := New(Config{Firecracker: bin}).Features(ctx); f.TemplatesOff != "" || !f.TemplateTap {
		t.Errorf("Features = %+v; want templates on, with a tap for a template's NIC", f)
	}
	if f, _ := New(Config{Firecracker: bin, UseJailer: true, Launcher: launcherOnly{}}).Features(ctx); !strings.Contains(f.TemplatesOff, "root helper") {
		t.Errorf("jailed through a Launcher that cannot seal: TemplatesOff = %q; want the root helper named", f.TemplatesOff)
	}
	if f, _ := New(Config{Firecracker: bin, UseJailer: true, Launcher: sealingLauncher{}}).Features(ctx); f.TemplatesOff != "" {
		t.Errorf("jailed through a sealing Launcher: TemplatesOff = %q; want templates on", f.TemplatesOff)
	}
	if _, err := jailed.StartTemplate(ctx, templateSpec(t), t.TempDir()); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "jailer") {
		t.Errorf("jailed StartTemplate: %v; want a failed precondition naming the jailer", err)
	}
	if _, err := jailed.StartClone(ctx, templateSpec(t), t.TempDir()); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("jailed StartClone: %v; want a failed precondition", err)
	}
}

// TestTemplateWithNIC: a template VM's NIC is configured on the tap it is
// given; a clone's /snapshot/load carries network_overrides mapping the
// NIC (eth0) to the clone's own tap, valid against firecracker.yaml, and
// the fake restores the NIC on that tap, not the template's. A NIC with
// no tap is refused.
func TestTemplateWithNIC(t *testing.T) {
	bin, reqLog := fakeBinary(t)
	e := New(Config{Firecracker: bin, StartTimeout: 5 * time.Second, Logger: testLogger(t)})
	ctx := context.Background()
	dir := t.TempDir()
	spec := testSpec(t)
	spec.Net.TapName = "bgr-ttemplate"
	inst, err := e.StartTemplate(ctx, spec, dir)
	if err != nil {
		t.Fatalf("StartTemplate: %v", err)
	}
	if err := e.SaveTemplate(ctx, inst, dir); err != nil {
		t.Fatalf("SaveTemplate: %v", err)
	}
	var nic string
	for _, r := range readReqLog(t, reqLog) {
		if strings.HasPrefix(r, "PUT /network-interfaces/eth0") {
			nic = r
		}
	}
	assertContains(t, nic, `"host_dev_name":"bgr-ttemplate"`)
	os.Remove(reqLog)

	clone := testSpec(t)
	clone.Net.TapName = "bgr-clone1"
	cinst, err := e.StartClone(ctx, clone, dir)
	if err != nil {
		t.Fatalf("StartClone: %v", err)
	}
	defer func() { cinst.Kill(); cinst.Wait(ctx) }()
	var load string
	for _, r := range readReqLog(t, reqLog) {
		if strings.HasPrefix(r, "PUT /snapshot/load") {
			load = r
		}
	}
	assertContains(t, load, `"network_overrides":[{"iface_id":"eth0","host_dev_name":"bgr-clone1"}]`)
	waitConsole(t, clone.Dir, "fake guest: nic eth0 on tap bgr-clone1")

	detached := testSpec(t)
	detached.Net = &engine.NetSpec{Detached: true, MAC: "02:00:00:00:00:01"}
	if _, err := e.StartTemplate(ctx, detached, t.TempDir()); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "tap") {
		t.Errorf("StartTemplate with a detached NIC: %v; want an invalid argument naming the tap", err)
	}
	assertNothingLeft(t, detached)
}

// TestTemplateWithNICNeedsNetworkOverrides: before Firecracker 1.12 (no
// network_overrides) a template or clone with a NIC is refused as a
// failed precondition naming the version, before any process starts;
// without a NIC both work.
func TestTemplateWithNICNeedsNetworkOverrides(t *testing.T) {
	bin, reqLog := fakeBinary(t, "BANGER_FAKE_FC_VERSION=1.11.1")
	e := New(Config{Firecracker: bin, StartTimeout: 5 * time.Second})
	ctx := context.Background()
	spec := testSpec(t)
	if _, err := e.StartTemplate(ctx, spec, t.TempDir()); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "v1.12.0") {
		t.Errorf("StartTemplate with a NIC on 1.11.1: %v; want a failed precondition naming v1.12.0", err)
	}
	assertNothingLeft(t, spec)
	dir, _ := saveTestTemplate(t, e, reqLog)
	clone := testSpec(t)
	if _, err := e.StartClone(ctx, clone, dir); !errdefs.IsFailedPrecondition(err) || errors.Is(err, engine.ErrBadTemplate) {
		t.Errorf("StartClone with a NIC on 1.11.1: %v; want a failed precondition, not a bad template", err)
	}
	assertNothingLeft(t, clone)
}

// waitConsole waits for line in the VM's console log.
func waitConsole(t *testing.T, dir, line string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(dir, ConsoleLog))
		if strings.Contains(string(b), line) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("console log has no %q:\n%s", line, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
