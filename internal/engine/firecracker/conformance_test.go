package firecracker_test

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/enginetest"
	"github.com/bangervm/banger/internal/engine/firecracker"
	"github.com/bangervm/banger/internal/testutil"
)

// TestConformance runs the engine conformance suite (boot, agent channel,
// graceful shutdown, forced shutdown, kill, re-attach after a daemon
// restart) through the Firecracker engine against the Firecracker test
// double, which boots the guests under QEMU.
func TestConformance(t *testing.T) {
	testutil.SkipShort(t, "boots real guests")
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		enginetest.Require(t, "qemu-system-x86_64 not installed (Debian package qemu-system-x86)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "firecracker")
	build := exec.Command("go", "build", "-o", bin, "./fcdouble")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the test double: %v\n%s", err, out)
	}
	fx := enginetest.DebianFixtures(t)
	enginetest.Run(t, func(t *testing.T) engine.Engine {
		return firecracker.New(firecracker.Config{Firecracker: bin, Logger: slog.New(slog.DiscardHandler)})
	}, fx)
}
