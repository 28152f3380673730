package config

import (
	"os"
	"testing"

	"github.com/bangervm/banger/internal/testutil"
)

// Load reads BANGER_NETWORK and BANGER_ROOT_HELPER: the tests set them
// where they mean to, never take them from the shell.
func TestMain(m *testing.M) {
	testutil.ClearProductEnv()
	os.Exit(m.Run())
}
