package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/workspace"
)

// TestWorkspaceExport runs export against a workspace shipped into "box",
// which is this machine through a real agent handler: the patch applies
// to the shipping checkout with its uncommitted changes; --output replaces
// a planted symlink; a patch the check refuses (the guest added a nested
// repository, a gitlink) is neither printed nor written; guest error text
// reaches the error escaped.
func TestWorkspaceExport(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	os.WriteFile(filepath.Join(home, ".gitconfig"), []byte("[user]\n\tname = t\n\temail = t@t\n"), 0o644)
	ctx := context.Background()
	g := func(dir string, args ...string) {
		t.Helper()
		if _, err := hostcmd.Git(ctx, hostcmd.GitCmd{Dir: dir, Args: args}); err != nil {
			t.Fatal(err)
		}
	}
	put := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	host := filepath.Join(t.TempDir(), "repo")
	g("", "init", "-q", host)
	put(filepath.Join(host, "f"), "one\n")
	g(host, "add", "f")
	g(host, "commit", "-qm", "one")
	put(filepath.Join(host, "f"), "one\nuncommitted\n")

	repo, err := workspace.Inspect(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	m, err := workspace.Plan(ctx, repo, workspace.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	if err := workspace.Pack(ctx, m, &stream); err != nil {
		t.Fatal(err)
	}
	guest := filepath.Join(t.TempDir(), "guest")
	if out, err := hostcmd.Run(ctx, hostcmd.Cmd{Name: "sh", Args: []string{"-c", workspace.GuestPrepareScript(guest, "")}, Stdin: &stream}); err != nil {
		t.Fatalf("prepare: %v %s", err, out)
	}
	put(filepath.Join(guest, "f"), "one\nuncommitted\nguest\n")

	c := serveCp(t)
	v := api.VM{ID: "box", Name: "box", Workspace: guest}
	dir := t.TempDir()
	out, victim := filepath.Join(dir, "changes.patch"), filepath.Join(dir, "victim")
	put(victim, "keep\n")
	if err := os.Symlink(victim, out); err != nil {
		t.Fatal(err)
	}
	var stdout bytes.Buffer
	if err := exportPatch(ctx, c, v, exportOptions{Output: out}, &stdout); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(out); err != nil || !st.Mode().IsRegular() || stdout.Len() != 0 {
		t.Fatalf("--output: %v %v, stdout %q", st, err, stdout.String())
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
		t.Errorf("written through the planted symlink: %q", b)
	}
	patch, _ := os.ReadFile(out)
	if err := exportPatch(ctx, c, v, exportOptions{}, &stdout); err != nil || stdout.String() != string(patch) {
		t.Errorf("stdout export: %v\n%q\nwant %q", err, stdout.String(), patch)
	}
	g(host, "apply", out)
	if b, _ := os.ReadFile(filepath.Join(host, "f")); string(b) != "one\nuncommitted\nguest\n" {
		t.Errorf("after git apply on the shipping checkout: %q", b)
	}

	// The guest adds a nested repository: git diff shows a gitlink,
	// which the check refuses.
	nested := filepath.Join(guest, "nested")
	g("", "init", "-q", nested)
	put(filepath.Join(nested, "x"), "x\n")
	g(nested, "add", "x")
	g(nested, "commit", "-qm", "x")
	stdout.Reset()
	err = exportPatch(ctx, c, v, exportOptions{Output: out}, &stdout)
	if err == nil || !strings.Contains(err.Error(), "submodule") {
		t.Errorf("export of a gitlink: %v, want a refusal naming the submodule", err)
	}
	if b, _ := os.ReadFile(out); string(b) != string(patch) {
		t.Error("a refused patch replaced the --output file")
	}
	if err := exportPatch(ctx, c, v, exportOptions{}, &stdout); err == nil || stdout.Len() != 0 {
		t.Errorf("a refused patch on stdout: %v, printed %q", err, stdout.String())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("output directory holds %d entries, want the patch and victim", len(ents))
	}

	// Guest error text is escaped.
	err = exportPatch(ctx, c, v, exportOptions{BaseCommit: "\x1b]0;pwned\a"}, &stdout)
	if err == nil || strings.ContainsAny(err.Error(), "\x1b\a") || !strings.Contains(err.Error(), `\x1b]0;pwned`) {
		t.Errorf("guest error: %q", err)
	}
}
