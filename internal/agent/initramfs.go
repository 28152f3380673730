package agent

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/kernel/cpio"
)

// BootConfig is the agent's boot configuration (see agentproto.BootConfig).
type BootConfig = agentproto.BootConfig

// WriteInitramfs writes the per-VM agent initramfs to w: a gzip-compressed
// newc cpio with /init (the agent binary at agentBinary), the boot
// configuration at /etc/banger/boot.json and the directories and console
// device the agent needs before it mounts anything. The kernel unpacks it
// over the kernel's module initramfs when the two are concatenated, this one
// last.
func WriteInitramfs(w io.Writer, agentBinary string, cfg BootConfig) error {
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
	conf, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("agent initramfs: encode boot config: %w", err)
	}
	// BestSpeed: this archive is built for every boot, and the binary
	// compresses only a little better at higher levels.
	bw := bufio.NewWriterSize(w, 256<<10)
	zw, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return err
	}
	cw := cpio.NewWriter(zw)
	dir := func(name string) error {
		return cw.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeDir | 0o755})
	}
	for _, d := range []string{"dev", "etc", "etc/banger", "proc", "run", "sys", "tmp"} {
		if err := dir(d); err != nil {
			return fmt.Errorf("agent initramfs: %w", err)
		}
	}
	if err := cw.WriteHeader(&cpio.Header{Name: "dev/console", Mode: cpio.TypeChar | 0o600, RDevMajor: 5, RDevMinor: 1}); err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	bootJSON := strings.TrimPrefix(agentproto.BootConfigPath, "/")
	if err := cw.WriteHeader(&cpio.Header{Name: bootJSON, Mode: cpio.TypeReg | 0o644, Size: int64(len(conf))}); err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	if _, err := cw.Write(conf); err != nil {
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
	if err := zw.Close(); err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("agent initramfs: %w", err)
	}
	return nil
}
