// Package testutil holds helpers shared by banger's tests: prerequisites
// that skip locally but fail in CI, and an in-process OCI registry.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run in CI, where a missing prerequisite is
// a failure rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips the test when ok is false, or fails it in CI.
func Require(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("prerequisite missing in CI: %s", what)
	}
	t.Skipf("prerequisite missing: %s", what)
}

// RequireTool requires a program in PATH.
func RequireTool(t testing.TB, name, pkg string) {
	t.Helper()
	_, err := exec.LookPath(name)
	Require(t, err == nil, name+" (apt-get install "+pkg+")")
}

// RequireRoot requires running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "root")
}
