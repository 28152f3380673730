package mcpserver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

// Host paths resolve inside the --repo directories only: symbolic links
// are followed before the check, ".." is refused whatever it resolves to.
func TestRootsResolve(t *testing.T) {
	base := t.TempDir()
	repo := filepath.Join(base, "repo")
	secret := filepath.Join(base, "secret")
	for _, d := range []string{filepath.Join(repo, "sub"), secret} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(repo, "f"), []byte("x"), 0o644)
	os.Symlink(secret, filepath.Join(repo, "escape"))
	os.Symlink(filepath.Join(repo, "sub"), filepath.Join(repo, "inner"))
	// The repository named through a link resolves to its real path.
	os.Symlink(repo, filepath.Join(base, "link-to-repo"))
	r, err := NewRoots([]string{filepath.Join(base, "link-to-repo")})
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"f":                                  filepath.Join(repo, "f"),
		filepath.Join(repo, "sub"):           filepath.Join(repo, "sub"),
		"inner":                              filepath.Join(repo, "sub"),
		"new-file":                           filepath.Join(repo, "new-file"),
		filepath.Join(repo, "sub", "new"):    filepath.Join(repo, "sub", "new"),
		filepath.Join(base, "link-to-repo"):  repo,
		filepath.Join(repo, "inner", "x.go"): filepath.Join(repo, "sub", "x.go"),
	} {
		if got, err := r.Resolve(in); err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		secret,
		"escape",
		filepath.Join("escape", "new"),
		"../secret",
		"sub/../../secret",
		"sub/..",
		"/etc/passwd",
		base,
		"",
	} {
		got, err := r.Resolve(in)
		if err == nil {
			t.Errorf("Resolve(%q) = %q, want a refusal", in, got)
		} else if in != "" && !errdefs.IsPermissionDenied(err) && !errdefs.IsNotFound(err) {
			t.Errorf("Resolve(%q): %v, want permission denied", in, err)
		}
	}
	none, _ := NewRoots(nil)
	if _, err := none.Resolve(filepath.Join(repo, "f")); err == nil || !strings.Contains(err.Error(), "without --repo") {
		t.Errorf("no roots: %v", err)
	}
}

func TestHeadTail(t *testing.T) {
	var h headTail
	h.Write([]byte(strings.Repeat("a", outputHead)))
	h.Write([]byte("MIDDLE"))
	h.Write([]byte(strings.Repeat("z", outputTail)))
	if h.cut != 6 || !strings.Contains(h.String(), "[... 6 bytes cut ...]") || strings.Contains(h.String(), "MIDDLE") {
		t.Errorf("cut %d", h.cut)
	}
	var small headTail
	small.Write([]byte("hello "))
	small.Write([]byte("world"))
	if small.String() != "hello world" || small.cut != 0 {
		t.Errorf("small: %q", small.String())
	}
}
