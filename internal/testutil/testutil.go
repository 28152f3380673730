// Package testutil holds helpers shared by banger's tests: prerequisites
// that skip locally but fail in CI, and an in-process OCI registry.
//
// Every skip in banger's tests goes through this file (a test in
// internal/codecheck enforces it), so that CI=true can turn a missing
// prerequisite into a failure instead of a test that silently never runs.
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
	if !ok {
		Missing(t, "%s", what)
	}
}

// Missing reports a missing prerequisite: the test is skipped, or failed
// in CI, where a missing prerequisite is a broken setup.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("prerequisite missing in CI: "+format, args...)
	}
	t.Skipf("prerequisite missing: "+format, args...)
}

// NotApplicable skips a test that does not apply here, in CI too: a
// property of the host the test checks against rather than something CI
// should have installed (a TSC that is not constant), or a test function
// that is really the body of a child process the suite re-executes.
func NotApplicable(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Skipf("not applicable: "+format, args...)
}

// SkipShort skips a slow test (one that boots guests) under go test -short.
// CI never passes -short.
func SkipShort(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: %s", what)
	}
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
