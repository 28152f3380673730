package rootfs

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/bangervm/banger/api"
)

// The hand-off on the state volume: Export leaves a complete tar and the
// config, Handed finds them, Done marks the VM created and removes them,
// and a later Export (a stopped Sandbox started again) writes nothing.
// A failed export leaves nothing for the launcher to take.
func TestExportHandoff(t *testing.T) {
	root, state := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := Handed(state); ok || err != nil {
		t.Fatalf("empty volume: handed %v, %v; want nothing", ok, err)
	}
	if did, _, err := Export(context.Background(), root, state, Limits{Bytes: 1}, api.ImageConfig{}); did || err == nil {
		t.Fatalf("export past the limit: %v, %v; want an error", did, err)
	}
	if _, _, ok, err := Handed(state); ok || err != nil {
		t.Fatalf("after a failed export: handed %v, %v; want nothing", ok, err)
	}
	cfg := api.ImageConfig{Env: []string{"A=1"}, WorkingDir: "/w"}
	did, st, err := Export(context.Background(), root, state, Limits{Bytes: 1 << 20, Files: 10}, cfg)
	if err != nil || !did || st.Files != 2 {
		t.Fatalf("export: %v, %+v, %v; want the root and hello", did, st, err)
	}
	tarPath, got, ok, err := Handed(state)
	if err != nil || !ok || got.WorkingDir != "/w" || !slices.Equal(got.Env, cfg.Env) {
		t.Fatalf("handed %q %+v %v %v", tarPath, got, ok, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(state, Dir)); len(ents) != 2 {
		t.Errorf("hand-off directory holds %v: want the tar and the config only (no temporary file left)", ents)
	}
	if err := Done(state); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tarPath); !os.IsNotExist(err) {
		t.Errorf("tar after Done: %v, want it removed", err)
	}
	if did, _, err := Export(context.Background(), root, state, Limits{}, cfg); did || err != nil {
		t.Errorf("export once the VM exists: %v, %v; want nothing done", did, err)
	}
	if _, _, ok, _ := Handed(state); ok {
		t.Error("handed after Done: want nothing")
	}
}
