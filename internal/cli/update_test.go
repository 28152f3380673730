package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/buildinfo"
	"github.com/bangervm/banger/internal/paths"
	"github.com/bangervm/banger/internal/release"
)

// update --check against a signed manifest on 127.0.0.1: exit 10 with
// both versions when a newer release exists, 0 when not; usage errors
// for bad combinations; a build without a compiled-in source refuses.
func TestUpdateCheck(t *testing.T) {
	key, _ := release.GenerateKey()
	pub, _ := release.MarshalPublicKey(&key.PublicKey)
	m := release.Manifest{Latest: "v0.2.0", Released: time.Now().UTC(), Releases: []release.Release{
		{Version: "v0.2.0", Tarball: release.TarballPath("v0.2.0"), Size: 10, SHA256: strings.Repeat("a", 64)},
	}}
	body, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := release.Sign(key, body)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/manifest.json":
			w.Write(body)
		case "/manifest.json.sig":
			w.Write(sig)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	saved := [...]string{buildinfo.Version, buildinfo.UpdateURL, buildinfo.UpdateKey}
	defer func() { buildinfo.Version, buildinfo.UpdateURL, buildinfo.UpdateKey = saved[0], saved[1], saved[2] }()
	run := func(args ...string) (int, string, string) {
		io, out, errOut := TestStreams()
		f := &Factory{IO: io, Layout: paths.Under(t.TempDir()), Client: func(context.Context) (*client.Client, error) {
			t.Fatal("contacted the daemon")
			return nil, errors.New("unreachable")
		}}
		return Run(f, append([]string{"update"}, args...)), out.String(), errOut.String()
	}

	buildinfo.Version, buildinfo.UpdateURL, buildinfo.UpdateKey = "v0.1.0", "", ""
	if code, _, errOut := run("--check"); code != ExitFailure || !strings.Contains(errOut, "not built for updates") {
		t.Errorf("a development build: exit %d %q", code, errOut)
	}
	buildinfo.UpdateURL, buildinfo.UpdateKey = srv.URL+"/manifest.json", base64.StdEncoding.EncodeToString(pub)
	if code, out, errOut := run("--check"); code != ExitUpdateAvailable || !strings.Contains(out, "v0.2.0 is available (installed: v0.1.0)") {
		t.Errorf("--check with a newer release: exit %d %q %q", code, out, errOut)
	}
	if code, out, _ := run("--check", "--json"); code != ExitUpdateAvailable || !strings.Contains(out, `"updateAvailable": true`) {
		t.Errorf("--check --json: exit %d %q", code, out)
	}
	buildinfo.Version = "v0.2.0"
	if code, out, _ := run("--check"); code != ExitOK || !strings.Contains(out, "up to date") {
		t.Errorf("--check when current: exit %d %q", code, out)
	}
	for _, args := range [][]string{{"--json"}, {"--check", "--to", "v0.2.0"}, {"--check", "--force"}} {
		if code, _, _ := run(args...); code != ExitUsage {
			t.Errorf("update %v: exit %d, want a usage error", args, code)
		}
	}
	if code, _, errOut := run("--dry-run"); code != ExitFailure || !strings.Contains(errOut, "system install") {
		t.Errorf("update without an install: exit %d %q", code, errOut)
	}
}
