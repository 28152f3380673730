package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

func TestVersion(t *testing.T) {
	dir := t.TempDir()
	fake := func(name, out string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("#!/bin/sh\nprintf '"+out+"'\n"), 0o755)
		return p
	}
	ctx := context.Background()
	good := fake("qemu-good", `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022\n`)
	if v, err := New(Config{Binary: good}).Version(ctx); err != nil || v != "7.2.22" {
		t.Errorf("Version = %q, %v; want 7.2.22", v, err)
	}
	odd := fake("qemu-odd", `something else\n`)
	if _, err := New(Config{Binary: odd}).Version(ctx); err == nil || !strings.Contains(err.Error(), "QEMU emulator version") {
		t.Errorf("unparsable output: %v", err)
	}
	_, err := New(Config{Binary: filepath.Join(dir, "missing")}).Version(ctx)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "qemu-system-x86") {
		t.Errorf("missing binary: %v, want a failed precondition naming the package", err)
	}
}
