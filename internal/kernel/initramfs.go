package kernel

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/bangervm/banger/internal/kernel/cpio"
)

// ModulesLoadPath is where the generated initramfs lists module files in
// load order, one absolute path per line.
const ModulesLoadPath = "etc/banger/modules.load"

// initramfsEntry is one file, directory or device of the generated archive.
type initramfsEntry struct {
	mode  uint32
	data  []byte
	major uint32
	minor uint32
}

// writeInitramfs writes the modules in res as a gzip-compressed newc archive
// to dst (see the package documentation for the layout).
func writeInitramfs(dst string, tree *moduleTree, res *resolution) error {
	modDir := "lib/modules/" + tree.version
	entries := map[string]initramfsEntry{
		"dev/console": {mode: cpio.TypeChar | 0o600, major: 5, minor: 1},
	}
	var load strings.Builder
	for _, m := range res.order {
		entries[modDir+"/"+m.rel] = initramfsEntry{mode: cpio.TypeReg | 0o644, data: m.data}
		load.WriteString("/" + modDir + "/" + m.rel + "\n")
	}
	entries[modDir+"/modules.dep"] = initramfsEntry{mode: cpio.TypeReg | 0o644, data: res.depFile()}
	if tree.builtinFile != nil {
		entries[modDir+"/modules.builtin"] = initramfsEntry{mode: cpio.TypeReg | 0o644, data: tree.builtinFile}
	}
	entries[ModulesLoadPath] = initramfsEntry{mode: cpio.TypeReg | 0o644, data: []byte(load.String())}
	for name := range entries {
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			entries[d] = initramfsEntry{mode: cpio.TypeDir | 0o755}
		}
	}

	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	err = writeArchive(f, entries)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("write initramfs %s: %w", dst, err)
	}
	return nil
}

// writeArchive writes entries in name order, which puts every directory
// before its contents, with fixed owner and mtime so the output depends on
// the entries alone.
func writeArchive(f *os.File, entries map[string]initramfsEntry) error {
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	bw := bufio.NewWriterSize(f, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.BestCompression)
	if err != nil {
		return err
	}
	cw := cpio.NewWriter(zw)
	for _, n := range names {
		e := entries[n]
		h := &cpio.Header{Name: n, Mode: e.mode, Size: int64(len(e.data)), RDevMajor: e.major, RDevMinor: e.minor}
		if err := cw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := cw.Write(e.data); err != nil {
			return err
		}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}
