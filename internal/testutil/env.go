package testutil

import (
	"os"
	"strings"
)

// ClearProductEnv unsets, for the whole test binary and every program it
// starts, each BANGER* variable but the suite's own settings: what a
// developer's shell exports for their own banger (BANGER_HOME,
// BANGER_NETWORK, BANGER_ROOT_HELPER, BANGERD, BANGER_AGENT, ...) must not
// reach the daemons and CLIs the tests start; each test sets what it
// relies on. Call it first in TestMain, after dispatching to any child
// process the binary re-executes as (a child's environment is its
// parent's choice).
func ClearProductEnv() {
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "BANGER") && !SuiteSetting(name) {
			os.Unsetenv(name)
		}
	}
}

// SuiteSetting reports whether the BANGER* variable name is a setting of
// the test suite rather than of banger: the download cache
// (BANGER_TEST_CACHE), systemd-resolved's files (BANGER_TEST_RESOLVED),
// the built binaries (BANGER_BIN) and the benchmarks' knobs
// (BANGER_BENCH_*). The Makefile's test target keeps the same ones.
func SuiteSetting(name string) bool {
	switch name {
	case "BANGER_BIN", "BANGER_TEST_CACHE", "BANGER_TEST_RESOLVED":
		return true
	}
	return strings.HasPrefix(name, "BANGER_BENCH_")
}
