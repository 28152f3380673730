package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/release"
	"github.com/bangervm/banger/internal/testutil"
)

// TestKeygenSignPubkey: keygen's key signs a file with sign; the
// signature verifies with key.pub; pubkey --build prints key.pub as make
// release compiles it into banger (base64 of the PEM).
func TestKeygenSignPubkey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run(ctx, []string{"keygen", "--out", dir}, &out); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "key.pem")
	file := filepath.Join(dir, "SHA256SUMS")
	os.WriteFile(file, []byte("content\n"), 0o644)
	if err := run(ctx, []string{"sign", "--key", key, file}, &out); err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := os.ReadFile(filepath.Join(dir, "key.pub"))
	pub, err := release.ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := os.ReadFile(file + ".sig")
	if err := release.Verify(pub, []byte("content\n"), sig); err != nil {
		t.Fatalf("sign's signature: %v", err)
	}
	out.Reset()
	if err := run(ctx, []string{"pubkey", "--build", "--key", key}, &out); err != nil {
		t.Fatal(err)
	}
	if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out.String())); err != nil || !bytes.Equal(b, pubPEM) {
		t.Fatalf("pubkey --build: %q (%v), want base64 of key.pub", out.String(), err)
	}
	for _, args := range [][]string{{}, {"sign", file}, {"build", "--version", "v0.1.0"}, {"frobnicate"}} {
		var ue usageError
		if err := run(ctx, args, &out); err == nil || !asUsage(err, &ue) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
}

func asUsage(err error, ue *usageError) bool {
	u, ok := err.(usageError)
	*ue = u
	return ok
}

// TestMakeReleaseIsReproducible: two `make release` runs of the same
// commit, into different directories, give byte-identical tarballs,
// SHA256SUMS, manifests and install.sh; the binaries carry the version,
// the commit's time as build time, and the release URL and key.
func TestMakeReleaseIsReproducible(t *testing.T) {
	testutil.SkipShort(t, "builds banger's binaries twice")
	testutil.RequireTool(t, "make", "make")
	testutil.RequireTool(t, "git", "git")
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	keys := t.TempDir()
	if err := run(context.Background(), []string{"keygen", "--out", keys}, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	const version = "v0.0.7"
	build := func() string {
		t.Helper()
		tmp := t.TempDir()
		dist := filepath.Join(tmp, "dist")
		cmd := exec.Command("make", "-C", root, "release", "VERSION="+version, "SIGNING_KEY="+filepath.Join(keys, "key.pem"),
			"DIST="+dist, "RELEASE_BIN="+filepath.Join(tmp, "bin"), "RELEASE_TOOL="+filepath.Join(tmp, "banger-release"),
			"RELEASE_URL=https://example.org/banger")
		// The commit's time, not the caller's SOURCE_DATE_EPOCH.
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make release: %v\n%s", err, out)
		}
		return tmp
	}
	a, b := build(), build()
	for _, f := range []string{"v0.0.7/" + release.TarballName(version), "v0.0.7/SHA256SUMS", "manifest.json", "install.sh"} {
		fa, err := os.ReadFile(filepath.Join(a, "dist", f))
		if err != nil {
			t.Fatal(err)
		}
		fb, _ := os.ReadFile(filepath.Join(b, "dist", f))
		if !bytes.Equal(fa, fb) {
			t.Errorf("%s differs between two builds of one commit", f)
		}
	}
	commitTime, err := exec.Command("git", "-C", root, "log", "-1", "--format=%ct").Output()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(a, "bin", "banger"), "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Version, BuildTime string }
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(commitTime)), 10, 64)
	if want := time.Unix(n, 0).UTC().Format(time.RFC3339); v.Version != version || v.BuildTime != want {
		t.Errorf("banger version: %s; want %s built %s (the commit's time)", out, version, want)
	}
}
