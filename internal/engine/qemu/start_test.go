package qemu_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/enginetest"
	"github.com/bangervm/banger/internal/engine/qemu"
)

// fakeSpec returns a valid spec with a dummy kernel in a short directory.
func fakeSpec(t *testing.T) engine.Spec {
	t.Helper()
	dir, err := os.MkdirTemp("", "bvm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	k := filepath.Join(dir, "vmlinux")
	if err := os.WriteFile(k, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	return engine.Spec{ID: "fake", Dir: dir, VCPU: 1, MemoryMiB: 64, Kernel: k}
}

// fakeQEMU writes a shell script standing in for QEMU.
func fakeQEMU(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func newFake(bin string) *qemu.Engine {
	return qemu.New(qemu.Config{Binary: bin, Host: &qemu.HostInfo{KVMErr: "test"}, StartTimeout: 700 * time.Millisecond})
}

func TestStartRefusesBadSpecs(t *testing.T) {
	bin := fakeQEMU(t, "exit 1")
	ctx := context.Background()
	tests := []struct {
		name   string
		mutate func(*engine.Spec)
		engine *qemu.Engine
		class  error
		text   string
	}{
		{"memory above host RAM", func(s *engine.Spec) { s.MemoryMiB = 1 << 30 }, nil, errdefs.ErrInvalidArgument, "more than the host"},
		{"socket path too long", func(s *engine.Spec) {
			long := filepath.Join(s.Dir, strings.Repeat("d", 100))
			os.Mkdir(long, 0o700)
			s.Dir = long
		}, nil, errdefs.ErrInvalidArgument, "socket path"},
		{"no vcpu", func(s *engine.Spec) { s.VCPU = 0 }, nil, errdefs.ErrInvalidArgument, "vcpu"},
		{"missing kernel", func(s *engine.Spec) { s.Kernel += ".gone" }, nil, errdefs.ErrNotFound, "vmlinux.gone"},
		{"missing disk", func(s *engine.Spec) { s.Disks = []engine.Disk{{Path: "/nonexistent.ext4"}} }, nil, errdefs.ErrNotFound, "nonexistent.ext4"},
		{"qemu not installed", func(*engine.Spec) {}, newFake("/nonexistent/qemu-system-x86_64"), errdefs.ErrFailedPrecondition, "qemu-system-x86"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := fakeSpec(t)
			tt.mutate(&spec)
			e := tt.engine
			if e == nil {
				e = newFake(bin)
			}
			_, err := e.Start(ctx, spec)
			if !errors.Is(err, tt.class) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("Start: %v; want %v containing %q", err, tt.class, tt.text)
			}
			if _, serr := os.Stat(filepath.Join(spec.Dir, qemu.StateFile)); serr == nil {
				t.Error("state written for a refused spec")
			}
		})
	}
}

func TestStartEarlyExit(t *testing.T) {
	bin := fakeQEMU(t, `echo "qemu-system-x86_64: -kernel $*: could not load kernel" >&2; exit 1`)
	spec := fakeSpec(t)
	_, err := newFake(bin).Start(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "could not load kernel") || !strings.Contains(err.Error(), "exited during start") {
		t.Fatalf("Start: %v", err)
	}
	if _, err := os.Stat(filepath.Join(spec.Dir, qemu.StateFile)); err != nil {
		t.Errorf("engine.json not kept for teardown: %v", err)
	}
	if _, err := os.Stat(filepath.Join(spec.Dir, qemu.PIDFile)); err == nil {
		t.Error("pidfile left behind")
	}
	assertNoFake(t, spec.Dir)
}

func TestStartNoQMP(t *testing.T) {
	// A QEMU that hangs before opening its QMP socket, and one that
	// exits quickly after it has printed something to the console.
	bin := fakeQEMU(t, `echo stuck >&2; while :; do sleep 0.05; done`)
	spec := fakeSpec(t)
	start := time.Now()
	_, err := newFake(bin).Start(context.Background(), spec)
	if err == nil || !strings.Contains(err.Error(), "did not answer") || !strings.Contains(err.Error(), "stuck") {
		t.Fatalf("Start: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Start took %v", d)
	}
	assertNoFake(t, spec.Dir)
}

func TestStartCancelled(t *testing.T) {
	bin := fakeQEMU(t, `while :; do sleep 0.05; done`)
	spec := fakeSpec(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := qemu.New(qemu.Config{Binary: bin, Host: &qemu.HostInfo{KVMErr: "test"}}).Start(ctx, spec)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start: %v", err)
	}
	assertNoFake(t, spec.Dir)
}

func TestAttachStale(t *testing.T) {
	spec := fakeSpec(t)
	e := newFake(fakeQEMU(t, "exit 1"))
	e.Start(context.Background(), spec) // leaves engine.json
	// A pidfile pointing at a live process that is not this VM's QEMU.
	os.WriteFile(filepath.Join(spec.Dir, qemu.PIDFile), []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644)
	if _, err := e.Attach(context.Background(), spec); !errdefs.IsNotFound(err) {
		t.Errorf("Attach to a foreign pid: %v", err)
	}
}

func assertNoFake(t *testing.T, dir string) {
	t.Helper()
	enginetest.AssertNoProcess(t, dir)
}
