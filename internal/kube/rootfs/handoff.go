package rootfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/bangervm/banger/api"
)

// Where the launcher Pod's init containers and the launcher meet. The
// state volume (the Sandbox's claim) holds Dir; the tools volume (an
// emptyDir) holds the launcher's static binary for the rootfs container.
const (
	// MountDir holds the init containers' mounts inside the Sandbox's
	// image; it is left out of the tar.
	MountDir = "/.banger"
	// ToolsPath is the tools volume in both init containers.
	ToolsPath = MountDir + "/tools"
	// StatePath is the state volume in the rootfs container.
	StatePath = MountDir + "/state"
	// Tool is the static banger-launcher the tools container copies.
	Tool = ToolsPath + "/banger-launcher"

	// Dir, on the state volume, holds the hand-off.
	Dir = "rootfs"
	// TarName is the image's root filesystem as a tar.
	TarName = "rootfs.tar"
	// ConfigName is the image's config as the container saw it (JSON).
	ConfigName = "config.json"
	// DoneName marks a volume whose VM was created: the VM's disk holds
	// the guest's state from then on, and the image is not exported again.
	DoneName = "done"
	// MaxFiles bounds the entries of an exported image.
	MaxFiles = 1 << 20
)

// Export is the rootfs init container: unless the VM already exists on
// the state volume at state, it writes the container's root filesystem
// (root, "/" in the Pod) and config there, in full or not at all (a tar
// is renamed into place only once complete). It returns whether it
// exported.
func Export(ctx context.Context, root, state string, limits Limits, cfg api.ImageConfig) (bool, Stats, error) {
	dir := filepath.Join(state, Dir)
	if _, err := os.Stat(filepath.Join(dir, DoneName)); err == nil {
		return false, Stats{}, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, Stats{}, fmt.Errorf("state volume: %w", err)
	}
	tmp, err := os.CreateTemp(dir, TarName+".*")
	if err != nil {
		return false, Stats{}, fmt.Errorf("state volume: %w", err)
	}
	defer os.Remove(tmp.Name())
	st, err := Write(ctx, root, tmp, limits)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, st, fmt.Errorf("export the image's files: %w", err)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return false, st, err
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigName), b, 0o600); err != nil {
		return false, st, fmt.Errorf("state volume: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, TarName)); err != nil {
		return false, st, fmt.Errorf("state volume: %w", err)
	}
	return true, st, syncDir(dir)
}

// Handed is what Export left on the state volume at state, for the
// launcher: the tar's path and the image's config. ok is false when there
// is none (the Pod had no rootfs init container, or the VM exists).
func Handed(state string) (tarPath string, cfg api.ImageConfig, ok bool, err error) {
	dir := filepath.Join(state, Dir)
	tarPath = filepath.Join(dir, TarName)
	if _, err := os.Stat(tarPath); errors.Is(err, os.ErrNotExist) {
		return "", cfg, false, nil
	}
	f, err := os.Open(filepath.Join(dir, ConfigName))
	if err != nil {
		return "", cfg, false, fmt.Errorf("image config: %w", err)
	}
	defer f.Close()
	// Written by banger's own exporter; bounded all the same.
	if err := json.NewDecoder(io.LimitReader(f, 1<<20)).Decode(&cfg); err != nil {
		return "", cfg, false, fmt.Errorf("image config %s: %w", f.Name(), err)
	}
	return tarPath, cfg, true, nil
}

// Done marks the VM created on the state volume at state and removes the
// hand-off, which the VM's disk and banger's image store now replace.
func Done(state string) error {
	dir := filepath.Join(state, Dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, DoneName), nil, 0o600); err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	return errors.Join(removeMissingOK(filepath.Join(dir, TarName)), removeMissingOK(filepath.Join(dir, ConfigName)))
}

func removeMissingOK(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// CopySelf is the tools init container: it copies the running program (a
// static build) to dst, executable, so the rootfs container can run it in
// an image that has no program of banger's.
func CopySelf(dst string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	src, err := os.Open(self)
	if err != nil {
		return err
	}
	defer src.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", self, dst, err)
	}
	return out.Close()
}
