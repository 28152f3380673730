package daemon

import (
	"os"
	"testing"

	"github.com/bangervm/banger/internal/testutil"
)

// The daemon reads BANGER_* settings: the tests set them where they mean
// to, never take them from the shell. TestDaemonProcess's environment is
// its parent test's choice.
func TestMain(m *testing.M) {
	if os.Getenv(envDaemon) == "" {
		testutil.ClearProductEnv()
	}
	os.Exit(m.Run())
}
