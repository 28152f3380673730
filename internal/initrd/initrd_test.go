package initrd

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/kernel/cpio"
)

func TestWriteInitramfs(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "agent")
	payload := bytes.Repeat([]byte("ELF"), 1000)
	if err := os.WriteFile(bin, payload, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := agentproto.BootConfig{Hostname: "h", Root: &agentproto.RootConfig{Image: "/dev/vda", Disk: "/dev/vdb"}, Init: "/sbin/init"}
	// The per-boot initramfs is the agent archive followed by the boot
	// config archive; WriteInitramfs gzips the two together.
	var agentPart, bootPart, whole bytes.Buffer
	if err := WriteAgentArchive(&agentPart, bin); err != nil {
		t.Fatal(err)
	}
	if err := WriteBootConfigArchive(&bootPart, cfg); err != nil {
		t.Fatal(err)
	}
	if err := WriteInitramfs(&whole, bin, cfg); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&whole)
	if err != nil {
		t.Fatal(err)
	}
	unzipped, _ := io.ReadAll(zr)
	if !bytes.Equal(unzipped, append(append([]byte{}, agentPart.Bytes()...), bootPart.Bytes()...)) {
		t.Error("WriteInitramfs is not the two archives gzipped")
	}
	got := map[string]*cpio.Header{}
	data := map[string][]byte{}
	for _, part := range []*bytes.Buffer{&agentPart, &bootPart} {
		r := cpio.NewReader(part)
		for {
			h, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			got[h.Name] = h
			data[h.Name], _ = io.ReadAll(r)
		}
	}
	want := map[string]uint32{
		"init": cpio.TypeReg | 0o755, "etc/banger/boot.json": cpio.TypeReg | 0o644, "dev/console": cpio.TypeChar | 0o600,
		"dev": cpio.TypeDir | 0o755, "proc": cpio.TypeDir | 0o755, "sys": cpio.TypeDir | 0o755, "run": cpio.TypeDir | 0o755,
	}
	for name, mode := range want {
		if h := got[name]; h == nil || h.Mode != mode {
			t.Errorf("%s: %+v, want mode %o", name, h, mode)
		}
	}
	if h := got["dev/console"]; h != nil && (h.RDevMajor != 5 || h.RDevMinor != 1) {
		t.Errorf("console is %d:%d", h.RDevMajor, h.RDevMinor)
	}
	if !bytes.Equal(data["init"], payload) {
		t.Error("init differs from the agent binary")
	}
	var back agentproto.BootConfig
	if err := json.Unmarshal(data["etc/banger/boot.json"], &back); err != nil || back.Hostname != "h" || back.Root == nil || back.Init != "/sbin/init" {
		t.Errorf("boot.json: %+v %v", back, err)
	}
	if err := WriteInitramfs(io.Discard, filepath.Join(t.TempDir(), "missing"), cfg); err == nil {
		t.Error("missing binary: no error")
	}
}
