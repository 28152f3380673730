package qemu_test

import (
	"os/exec"
	"testing"

	"github.com/bangervm/banger/internal/engine"
	"github.com/bangervm/banger/internal/engine/enginetest"
	"github.com/bangervm/banger/internal/engine/qemu"
	"github.com/bangervm/banger/internal/testutil"
)

func TestConformance(t *testing.T) {
	testutil.SkipShort(t, "boots real guests")
	if _, err := exec.LookPath(qemu.DefaultBinary); err != nil {
		enginetest.Require(t, "%s not installed (Debian package qemu-system-x86)", qemu.DefaultBinary)
	}
	fx := enginetest.DebianFixtures(t)
	enginetest.Run(t, func(t *testing.T) engine.Engine {
		return qemu.New(qemu.Config{Logger: testLogger(t)})
	}, fx)
}
