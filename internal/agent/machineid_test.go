package agent

import (
	"os"
	"path/filepath"
	"testing"
)

// TestEnsureMachineID: a VM's own machine-id (on its disk, the overlay's
// upper layer) is kept; the image's (in the lower layer only), a symlink,
// an invalid one or none is replaced by a fresh valid one, different each
// time.
func TestEnsureMachineID(t *testing.T) {
	// root stands for the overlay; upper for the VM's disk's layer.
	setup := func(t *testing.T, rootID, upperID string) (string, string) {
		root, upper := t.TempDir(), t.TempDir()
		for dir, id := range map[string]string{root: rootID, upper: upperID} {
			if id == "" {
				continue
			}
			os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
			if err := os.WriteFile(filepath.Join(dir, machineIDFile), []byte(id), 0o444); err != nil {
				t.Fatal(err)
			}
		}
		return root, upper
	}
	const image = "0123456789abcdef0123456789abcdef\n"
	const own = "fedcba9876543210fedcba9876543210\n"

	root, upper := setup(t, own, own)
	if id, kept, err := ensureMachineID(root, upper); err != nil || !kept || id+"\n" != own {
		t.Errorf("the VM's own machine-id: %q kept %v, %v; want it kept", id, kept, err)
	}

	seen := map[string]bool{image[:32]: true}
	for _, c := range []struct{ name, root, upper string }{
		{"image's", image, ""},
		{"none", "", ""},
		{"invalid on the disk", image, "uninitialized\n"},
		{"all zeros", "00000000000000000000000000000000\n", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			root, upper := setup(t, c.root, c.upper)
			id, kept, err := ensureMachineID(root, upper)
			if err != nil || kept {
				t.Fatalf("ensureMachineID: %q kept %v, %v", id, kept, err)
			}
			b, _ := os.ReadFile(filepath.Join(root, machineIDFile))
			if !validMachineID(b) || string(b) != id+"\n" || seen[id] {
				t.Errorf("machine-id %q (file %q): want a fresh valid one", id, b)
			}
			seen[id] = true
		})
	}

	t.Run("symlink", func(t *testing.T) {
		root, upper := setup(t, "", "")
		target := filepath.Join(t.TempDir(), "elsewhere")
		os.WriteFile(target, []byte(image), 0o644)
		os.MkdirAll(filepath.Join(root, "etc"), 0o755)
		os.Symlink(target, filepath.Join(root, machineIDFile))
		if _, _, err := ensureMachineID(root, upper); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(target); string(b) != image {
			t.Errorf("the symlink's target was written: %q", b)
		}
		if fi, err := os.Lstat(filepath.Join(root, machineIDFile)); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("machine-id is not a regular file: %v", err)
		}
	})
}
