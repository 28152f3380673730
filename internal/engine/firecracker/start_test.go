package firecracker

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/enginetest"
	"github.com/bangervm/banger/internal/engine/proc"
)

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// elfKernel is the smallest file CheckKernel takes for an x86-64 vmlinux.
func elfKernel() []byte {
	b := make([]byte, 64)
	copy(b, "\x7fELF")
	b[4] = 2 // ELFCLASS64
	b[5] = 1
	binary.LittleEndian.PutUint16(b[18:], 62)
	return b
}

// testSpec returns a spec with a fake kernel, initrd, read-only root image
// and writable disk in a short directory (socket paths stay short).
func testSpec(t *testing.T) engine.Spec {
	t.Helper()
	dir, err := os.MkdirTemp("", "bfc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return engine.Spec{
		ID: "vm1", Dir: dir, VCPU: 2, MemoryMiB: 256,
		Kernel:  write("vmlinux", elfKernel()),
		Initrd:  write("initrd.img", []byte("07070100")),
		Cmdline: "quiet banger.id=vm1",
		Disks: []engine.Disk{
			{Path: write("root.ext4", make([]byte, 4096)), ReadOnly: true},
			{Path: write("disk.ext4", make([]byte, 4096))},
		},
		Net: &engine.NetSpec{TapName: "tap-vm1", MAC: "06:00:ac:10:00:02"},
	}
}

// fakeBinary makes a "firecracker" that is this test binary in fake mode,
// and returns its path and the request log path.
func fakeBinary(t *testing.T, env ...string) (bin, reqLog string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d := t.TempDir()
	bin = filepath.Join(d, "firecracker")
	if err := os.Symlink(exe, bin); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	reqLog = filepath.Join(d, "requests.log")
	t.Setenv("BANGER_FAKE_FC", "1")
	t.Setenv("BANGER_FAKE_FC_SPEC", filepath.Join(wd, "testdata", "firecracker.yaml"))
	t.Setenv("BANGER_FAKE_FC_LOG", reqLog)
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return bin, reqLog
}

func readReqLog(t *testing.T, p string) []string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
		if strings.HasPrefix(l, "VIOLATION") {
			t.Errorf("contract: %s", l)
		}
	}
	return lines
}

// assertNothingLeft checks that no firecracker of dir runs and that dir
// holds only the test's inputs and the logs.
func assertNothingLeft(t *testing.T, spec engine.Spec, allowed ...string) {
	t.Helper()
	enginetest.AssertNoProcess(t, spec.Dir)
	ents, _ := os.ReadDir(spec.Dir)
	inputs := []string{"vmlinux", "initrd.img", "root.ext4", "disk.ext4", "bzImage", ConsoleLog, LogFile, MetricsFile}
	for _, e := range ents {
		if !slices.Contains(inputs, e.Name()) && !slices.Contains(allowed, e.Name()) {
			t.Errorf("left in VM dir: %s", e.Name())
		}
	}
}

func TestStartConfiguresThroughAPI(t *testing.T) {
	bin, reqLog := fakeBinary(t)
	spec := testSpec(t)
	e := New(Config{Firecracker: bin, StartTimeout: 5 * time.Second, Logger: testLogger(t)})
	ctx := context.Background()
	inst, err := e.Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Kill(); inst.Wait(ctx) })

	lines := readReqLog(t, reqLog)
	var calls []string
	for _, l := range lines {
		f := strings.SplitN(l, " ", 3)
		calls = append(calls, f[0]+" "+f[1])
	}
	// GET / polls first; then the configuration, in order.
	i := slices.Index(calls, "PUT /logger")
	want := []string{"PUT /logger", "PUT /metrics", "PUT /machine-config", "PUT /boot-source", "PUT /drives/vda", "PUT /drives/vdb",
		"PUT /network-interfaces/eth0", "PUT /vsock", "PUT /actions"}
	if i < 0 || !slices.Equal(calls[i:], want) {
		t.Fatalf("calls %q; want GET / then %q", calls, want)
	}
	for _, w := range []string{
		`"vcpu_count":2`, `"mem_size_mib":256`,
		`"boot_args":"console=ttyS0 reboot=k panic=1 pci=off quiet banger.id=vm1"`,
		`"drive_id":"vda","path_on_host":"` + spec.Disks[0].Path + `","is_root_device":false,"is_read_only":true`,
		`"drive_id":"vdb","path_on_host":"` + spec.Disks[1].Path + `","is_root_device":false,"is_read_only":false`,
		`"host_dev_name":"tap-vm1","guest_mac":"06:00:ac:10:00:02"`,
		`"guest_cid":3,"uds_path":"` + filepath.Join(spec.Dir, VsockSocket) + `"`,
		`{"action_type":"InstanceStart"}`,
	} {
		if !strings.Contains(strings.Join(lines, "\n"), w) {
			t.Errorf("no request with %s in:\n%s", w, strings.Join(lines, "\n"))
		}
	}
	for _, f := range []string{StateFile, PIDFile, APISocket} {
		if !proc.FileExists(filepath.Join(spec.Dir, f)) {
			t.Errorf("%s missing", f)
		}
	}

	if st, err := inst.Status(ctx); err != nil || st != engine.StateRunning {
		t.Errorf("Status = %v, %v", st, err)
	}
	c, err := inst.DialAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inst.DialAgent(ctx); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("second DialAgent: %v", err)
	}
	c.Write([]byte("ping\n"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
		t.Errorf("echo: %q %v", buf, err)
	}
	c.Close()

	// A new engine (daemon restart) finds the VM again.
	att, err := New(Config{Firecracker: bin}).Attach(ctx, engine.Spec{ID: spec.ID, Dir: spec.Dir})
	if err != nil {
		t.Fatal(err)
	}
	if att.PID() != inst.PID() {
		t.Errorf("Attach pid %d, Start pid %d", att.PID(), inst.PID())
	}
	if _, err := att.Stats(ctx); err != nil {
		t.Error(err)
	}

	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := inst.Shutdown(sctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if !slices.Contains(readReqLog(t, reqLog), `PUT /actions {"action_type":"SendCtrlAltDel"}`) {
		t.Error("no SendCtrlAltDel")
	}
	// Firecracker's log reached the capped file through its pipe.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(spec.Dir, LogFile))
		if strings.Contains(string(b), "logger configured") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("firecracker.log holds %q, not the fake's line", b)
		}
	}
	assertNothingLeft(t, spec, StateFile)
	if _, err := New(Config{Firecracker: bin}).Attach(ctx, spec); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Attach after exit: %v; want ErrNotFound", err)
	}
}

func TestShutdownForcedWhenGuestIgnoresCtrlAltDel(t *testing.T) {
	bin, _ := fakeBinary(t, "BANGER_FAKE_FC_IGNORE_CAD=1")
	spec := testSpec(t)
	ctx := context.Background()
	inst, err := New(Config{Firecracker: bin, StartTimeout: 5 * time.Second}).Start(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := inst.Shutdown(sctx); !errors.Is(err, engine.ErrForced) {
		t.Errorf("Shutdown: %v; want ErrForced", err)
	}
	if st, _ := inst.Status(ctx); st != engine.StateExited {
		t.Errorf("Status after forced shutdown: %v", st)
	}
}

// TestStartSurfacesAPIErrors injects a Firecracker error at each step:
// Start must quote the failing request and fault_message and leave nothing.
func TestStartSurfacesAPIErrors(t *testing.T) {
	steps := []struct{ req, msg string }{
		{"PUT /logger", "Logger error: Failed to open target file"},
		{"PUT /machine-config", "Invalid Memory Configuration"},
		{"PUT /boot-source", "Invalid kernel path"},
		{"PUT /drives/vda", "Invalid block device path"},
		{"PUT /drives/vdb", "Unable to create the block device"},
		{"PUT /network-interfaces/eth0", "Open tap device failed: Resource busy"},
		{"PUT /vsock", "Cannot create backend for vsock device"},
		{"PUT /actions", "Failed to start microVM"},
	}
	for _, s := range steps {
		t.Run(strings.TrimPrefix(s.req, "PUT /"), func(t *testing.T) {
			bin, _ := fakeBinary(t, "BANGER_FAKE_FC_FAULTS="+s.req+"=400="+s.msg)
			spec := testSpec(t)
			_, err := New(Config{Firecracker: bin, StartTimeout: 5 * time.Second}).Start(context.Background(), spec)
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != 400 || ae.Fault != s.msg {
				t.Fatalf("Start: %v; want APIError 400 %q", err, s.msg)
			}
			if !strings.Contains(err.Error(), s.req) || !strings.Contains(err.Error(), s.msg) {
				t.Errorf("error %q does not name %q and %q", err, s.req, s.msg)
			}
			assertNothingLeft(t, spec)
		})
	}
}

func TestStartRefusesBadInput(t *testing.T) {
	tests := []struct {
		name   string
		env    []string
		cfg    func(c *Config, bin string)
		mutate func(s *engine.Spec)
		class  error
		text   []string
	}{
		{name: "firecracker missing", cfg: func(c *Config, _ string) { c.Firecracker = "/nonexistent/firecracker" },
			class: errdefs.ErrFailedPrecondition, text: []string{"firecracker_bin", "/nonexistent/firecracker"}},
		{name: "firecracker too old", env: []string{"BANGER_FAKE_FC_VERSION=0.25.0"},
			class: errdefs.ErrFailedPrecondition, text: []string{"v0.25.0 is too old", "v1.8.0"}},
		{name: "jailer missing", cfg: func(c *Config, _ string) { c.UseJailer, c.Jailer = true, "/nonexistent/jailer" },
			class: errdefs.ErrFailedPrecondition, text: []string{"jailer_bin", "/nonexistent/jailer"}},
		{name: "bzImage", mutate: func(s *engine.Spec) {
			b := make([]byte, 0x300)
			copy(b[0x202:], "HdrS")
			s.Kernel = filepath.Join(s.Dir, "bzImage")
			os.WriteFile(s.Kernel, b, 0o644)
		}, class: errdefs.ErrInvalidArgument, text: []string{"bzImage", "vmlinux"}},
		{name: "socket path too long", mutate: func(s *engine.Spec) {
			long := filepath.Join(s.Dir, strings.Repeat("d", 90))
			os.Mkdir(long, 0o700)
			s.Dir = long
		}, class: errdefs.ErrInvalidArgument, text: []string{"socket path", "shorter"}},
		{name: "too many vcpus", mutate: func(s *engine.Spec) { s.VCPU = 33 }, class: errdefs.ErrInvalidArgument, text: []string{"1 to 32"}},
		{name: "tap fd only", mutate: func(s *engine.Spec) { s.Net = &engine.NetSpec{TapFD: os.Stdin} }, class: errdefs.ErrInvalidArgument, text: []string{"tap name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin, reqLog := fakeBinary(t, tt.env...)
			spec := testSpec(t)
			base := t.TempDir()
			cfg := Config{Firecracker: bin, ChrootBase: base, StartTimeout: 2 * time.Second}
			if tt.cfg != nil {
				tt.cfg(&cfg, bin)
			}
			if tt.mutate != nil {
				tt.mutate(&spec)
			}
			_, err := New(cfg).Start(context.Background(), spec)
			if !errors.Is(err, tt.class) {
				t.Errorf("Start: %v; want class %v", err, tt.class)
			}
			for _, w := range tt.text {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Start: %v; want it to mention %q", err, w)
				}
			}
			if lines := readReqLog(t, reqLog); len(lines) > 0 {
				t.Errorf("API was called: %q", lines)
			}
			assertNothingLeft(t, spec)
			if ents, _ := os.ReadDir(base); len(ents) > 0 {
				t.Errorf("chroot base not empty: %v", ents)
			}
		})
	}
}
