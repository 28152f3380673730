package testutil

import (
	"os"
	"testing"
)

// What a developer's shell or an installed daemon's unit sets for banger
// is gone; the suite's own settings and everything else stay.
func TestClearProductEnv(t *testing.T) {
	set := map[string]string{
		"BANGER_HOME":                    "/home/dev/banger",
		"BANGERD":                        "/usr/local/bin/bangerd",
		"BANGER_NETWORK":                 "off",
		"BANGER_ROOT_HELPER":             "/run/banger/root.sock",
		"BANGER_AGENT":                   "/usr/local/lib/banger/banger-agent",
		"BANGER_TEST_FIRECRACKER_DOUBLE": "1",
		"BANGER_TEST_CACHE":              "/var/cache/bt",
		"BANGER_TEST_RESOLVED":           "/opt/r",
		"BANGER_BIN":                     "/src/bin",
		"BANGER_BENCH_ROUNDS":            "3",
		"NOT_BANGER_HOME":                "x",
	}
	for k, v := range set {
		t.Setenv(k, v)
	}
	ClearProductEnv()
	for k, v := range set {
		got, ok := os.LookupEnv(k)
		if keep := SuiteSetting(k) || k == "NOT_BANGER_HOME"; keep != ok || (keep && got != v) {
			t.Errorf("%s after ClearProductEnv: %q (set: %v); want kept: %v", k, got, ok, keep)
		}
	}
}
