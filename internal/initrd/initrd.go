// Package initrd builds, on the host, the initramfs archives that put
// banger-agent into a guest's boot: the agent archive (the binary as
// /init) and the per-boot configuration. It is host-side code: bangerd
// imports it, never the guest agent itself.
package initrd

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/kernel/cpio"
)

// WriteInitramfs writes the per-VM agent initramfs to w as one
// gzip-compressed newc cpio: the agent archive (see WriteAgentArchive)
// followed by the boot configuration. The kernel unpacks it over the
// kernel's module initramfs when the two are concatenated, this one last.
func WriteInitramfs(w io.Writer, agentBinary string, cfg agentproto.BootConfig) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	zw, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return err
	}
	if err := WriteAgentArchive(zw, agentBinary); err != nil {
		return err
	}
	if err := WriteBootConfigArchive(zw, cfg); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	return bw.Flush()
}

// WriteAgentArchive writes the part of the initramfs that depends only on
// the agent binary, as an uncompressed newc cpio: /init (the agent), the
// directories and the console device it needs before it mounts anything.
// The host builds it once per binary and reuses it for every boot; left
// uncompressed, the guest kernel unpacks it faster than a gzip archive
// under software emulation.
func WriteAgentArchive(w io.Writer, agentBinary string) error {
	bin, err := os.Open(agentBinary)
	if err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	defer bin.Close()
	fi, err := bin.Stat()
	if err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("agent initramfs: %s is not a regular file", agentBinary)
	}
	cw := cpio.NewWriter(w)
	for _, d := range []string{"dev", "etc", "etc/banger", "proc", "run", "sys", "tmp"} {
		if err := cw.WriteHeader(&cpio.Header{Name: d, Mode: cpio.TypeDir | 0o755}); err != nil {
			return fmt.Errorf("agent initramfs: %w", err)
		}
	}
	if err := cw.WriteHeader(&cpio.Header{Name: "dev/console", Mode: cpio.TypeChar | 0o600, RDevMajor: 5, RDevMinor: 1}); err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	if err := cw.WriteHeader(&cpio.Header{Name: "init", Mode: cpio.TypeReg | 0o755, Size: fi.Size()}); err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	if n, err := io.Copy(cw, bin); err != nil || n != fi.Size() {
		return fmt.Errorf("agent initramfs: copy %s: %d of %d bytes: %v", agentBinary, n, fi.Size(), err)
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	return nil
}

// WriteBootConfigArchive writes the per-boot part of the initramfs: an
// uncompressed newc cpio holding /etc/banger/boot.json.
func WriteBootConfigArchive(w io.Writer, cfg agentproto.BootConfig) error {
	conf, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("agent initramfs: encode boot config: %w", err)
	}
	cw := cpio.NewWriter(w)
	bootJSON := strings.TrimPrefix(agentproto.BootConfigPath, "/")
	if err := cw.WriteHeader(&cpio.Header{Name: bootJSON, Mode: cpio.TypeReg | 0o644, Size: int64(len(conf))}); err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	if _, err := cw.Write(conf); err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	if err := cw.Close(); err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	return nil
}

// Pad writes zeros to b up to the next 512-byte boundary: the kernel looks
// for the next of several concatenated archives only at aligned offsets.
func Pad(b *bytes.Buffer) {
	if r := b.Len() % 512; r != 0 {
		b.Write(make([]byte, 512-r))
	}
}
