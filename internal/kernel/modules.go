package kernel

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bangervm/banger/errdefs"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// DefaultModules are the modules a banger microVM needs before it can reach
// its root disk and talk to the host, and the ACPI power button with evdev,
// through which the engine asks a guest whose agent does not answer to
// stop cleanly. Any of them may be built in.
var DefaultModules = []string{
	"virtio_mmio", "virtio_blk", "virtio_net", "virtio_console",
	"vsock", "vmw_vsock_virtio_transport", "overlay", "ext4",
	"button", "evdev",
}

// maxModuleSize bounds one module, decompressed. The largest in-tree
// modules are a few tens of MiB with debug info.
const maxModuleSize = 128 << 20

// moduleSuffixes are the module file endings, longest first.
var moduleSuffixes = []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"}

// moduleTree is a lib/modules/<ver> directory.
type moduleTree struct {
	dir     string
	version string
	files   map[string]string // module name -> path relative to dir, slash-separated
	builtin map[string]bool   // module names in modules.builtin
	// builtinFile is modules.builtin's content, copied into the initramfs.
	builtinFile []byte
	// stripSigs is set when the kernel's build config is known and does
	// not force module signatures: see stripSignature.
	stripSigs bool
}

// openModuleTree indexes the modules under dir, which is either a
// lib/modules/<ver> directory or a directory holding exactly one such.
func openModuleTree(dir string) (*moduleTree, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("modules directory: %w", errdefs.FromFS(err))
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("modules directory %s is not a directory: %w", dir, errdefs.ErrInvalidArgument)
	}
	if !looksLikeVersionDir(dir) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("read modules directory: %w", err)
		}
		var vers []string
		for _, e := range ents {
			if e.IsDir() && looksLikeVersionDir(filepath.Join(dir, e.Name())) {
				vers = append(vers, e.Name())
			}
		}
		switch len(vers) {
		case 0:
			return nil, fmt.Errorf("modules directory %s holds no kernel modules; expected lib/modules/<version> or its parent: %w", dir, errdefs.ErrInvalidArgument)
		case 1:
			dir = filepath.Join(dir, vers[0])
		default:
			return nil, fmt.Errorf("modules directory %s holds several kernel versions (%s); name one: %w", dir, strings.Join(vers, ", "), errdefs.ErrInvalidArgument)
		}
	}
	t := &moduleTree{
		dir:     dir,
		version: filepath.Base(dir),
		files:   map[string]string{},
		builtin: map[string]bool{},
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// WalkDir does not follow symlinks, which keeps the build and
		// source links of an installed kernel out of the walk.
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		name, ok := moduleName(rel)
		if !ok {
			return nil
		}
		// depmod gives updates/ precedence over the stock modules.
		if old, dup := t.files[name]; !dup || (strings.HasPrefix(rel, "updates/") && !strings.HasPrefix(old, "updates/")) {
			t.files[name] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index modules in %s: %w", dir, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		t.builtinFile = b
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := moduleName(strings.TrimSpace(line)); ok {
				t.builtin[name] = true
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read modules.builtin: %w", err)
	}
	forced, known, err := sigsForced(dir, t.version)
	if err != nil {
		return nil, err
	}
	t.stripSigs = known && !forced
	return t, nil
}

// sigsForced reads the build config of kernel version, /boot/config-<ver>
// beside the lib/modules or usr/lib/modules tree at dir (as installed,
// and as in a kernel .deb), and reports whether it forces module
// signatures (CONFIG_MODULE_SIG_FORCE=y). known is false when there is no
// config.
func sigsForced(dir, version string) (forced, known bool, err error) {
	for _, up := range []string{"../../..", "../../../.."} {
		p := filepath.Join(dir, up, "boot", "config-"+version)
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, false, fmt.Errorf("read kernel config: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(line) == "CONFIG_MODULE_SIG_FORCE=y" {
				return true, true, nil
			}
		}
		return false, true, nil
	}
	return false, false, nil
}

// sigMagic ends a signed module (the kernel's MODULE_SIG_STRING).
const sigMagic = "~Module signature appended~\n"

// stripSignature returns ko without its appended signature, or ko itself
// if it has none or the trailer does not add up.
//
// Why: the guest kernel checks each signature as the module loads, and
// under software emulation that is a large part of loading the boot
// modules (about 60 of 130 ms for Debian's six). Where signatures are not
// forced the kernel loads an unsigned module anyway (tainting itself,
// which only says so in its log), and the check guards nothing here: the
// modules come from the kernel package the host imported, in an
// initramfs the host builds. Kernels that force signatures keep them.
//
// The trailer is the kernel's struct module_signature (12 bytes: algo,
// hash, id_type, signer_len, key_id_len, 3 pad, big-endian sig_len)
// followed by sigMagic; the signer, key id and signature precede it.
func stripSignature(ko []byte) []byte {
	if !bytes.HasSuffix(ko, []byte(sigMagic)) {
		return ko
	}
	end := len(ko) - len(sigMagic)
	if end < 12 {
		return ko
	}
	ms := ko[end-12 : end]
	sigLen := int(binary.BigEndian.Uint32(ms[8:12]))
	n := 12 + int(ms[3]) + int(ms[4]) + sigLen
	if sigLen == 0 || n > end {
		return ko
	}
	return ko[:end-n]
}

// looksLikeVersionDir reports whether dir is a lib/modules/<ver> directory:
// it has a kernel/ subdirectory or depmod's files.
func looksLikeVersionDir(dir string) bool {
	for _, n := range []string{"kernel", "modules.order", "modules.builtin", "modules.dep"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	return false
}

// moduleName returns the module name for a module file path: the base name
// without suffix, with dashes as underscores as the kernel does.
func moduleName(p string) (string, bool) {
	base := path.Base(p)
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(base, s) && len(base) > len(s) {
			return normalizeModName(strings.TrimSuffix(base, s)), true
		}
	}
	return "", false
}

func normalizeModName(n string) string { return strings.ReplaceAll(n, "-", "_") }

// module is one module chosen for the initramfs.
type module struct {
	name string
	rel  string   // path in the initramfs, relative to lib/modules/<ver>, ending in .ko
	deps []string // direct dependencies, by name
	data []byte   // decompressed .ko
}

// resolution is the outcome of resolving the wanted modules.
type resolution struct {
	order   []*module // load order: dependencies first
	missing []string
}

func (r *resolution) names() []string {
	var n []string
	for _, m := range r.order {
		n = append(n, m.name)
	}
	return n
}

// resolve computes the wanted modules plus their dependencies, in an order
// in which each can be loaded. Wanted modules that are built in are skipped;
// those neither built in nor present are reported in missing. A missing
// dependency is an error: the module that needs it could not load.
func (t *moduleTree) resolve(ctx context.Context, wanted []string) (*resolution, error) {
	res := &resolution{}
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("module dependency cycle: %s -> %s: %w", strings.Join(chain, " -> "), name, errdefs.ErrInvalidArgument)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		state[name] = 1
		m, err := t.load(name)
		if err != nil {
			return err
		}
		for _, d := range m.deps {
			if _, ok := t.files[d]; !ok {
				if t.builtin[d] {
					continue
				}
				return fmt.Errorf("module %s depends on %s, which is neither in %s nor built in: %w", name, d, t.dir, errdefs.ErrInvalidArgument)
			}
			if err := visit(d, append(slices.Clip(chain), name)); err != nil {
				return err
			}
		}
		state[name] = 2
		res.order = append(res.order, m)
		return nil
	}
	for _, w := range wanted {
		w = normalizeModName(w)
		switch {
		case t.files[w] != "":
			if err := visit(w, nil); err != nil {
				return nil, err
			}
		case t.builtin[w]:
		default:
			res.missing = append(res.missing, w)
		}
	}
	return res, nil
}

// load reads and decompresses a module and its .modinfo.
func (t *moduleTree) load(name string) (*module, error) {
	rel := t.files[name]
	data, err := readModuleFile(filepath.Join(t.dir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", rel, err)
	}
	info, err := modinfo(data)
	if err != nil {
		return nil, fmt.Errorf("module %s: %w", rel, err)
	}
	if vm := info["vermagic"]; vm != "" {
		if v, _, _ := strings.Cut(vm, " "); v != t.version {
			return nil, fmt.Errorf("module %s is built for kernel %s, not %s: %w", rel, v, t.version, errdefs.ErrInvalidArgument)
		}
	}
	var deps []string
	for _, d := range strings.Split(info["depends"], ",") {
		if d = strings.TrimSpace(d); d != "" {
			deps = append(deps, normalizeModName(d))
		}
	}
	slices.Sort(deps)
	deps = slices.Compact(deps)
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(rel, s) {
			rel = strings.TrimSuffix(rel, s) + ".ko"
			break
		}
	}
	if t.stripSigs {
		data = stripSignature(data)
	}
	return &module{name: name, rel: rel, deps: deps, data: data}, nil
}

// readModuleFile reads a module, decompressing .ko.xz, .ko.zst and .ko.gz.
func readModuleFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReader(f)
	switch {
	case strings.HasSuffix(p, ".ko.xz"):
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		r = xr
	case strings.HasSuffix(p, ".ko.zst"):
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(p, ".ko.gz"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		r = zr
	}
	data, err := io.ReadAll(io.LimitReader(r, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(data) > maxModuleSize {
		return nil, fmt.Errorf("larger than %d bytes: %w", maxModuleSize, errdefs.ErrInvalidArgument)
	}
	return data, nil
}

// modinfo parses a module's .modinfo section: NUL-separated key=value
// strings. A key given several times (alias, parm) keeps its first value,
// which is enough for depends and vermagic.
func modinfo(ko []byte) (map[string]string, error) {
	f, err := elf.NewFile(bytes.NewReader(ko))
	if err != nil {
		return nil, fmt.Errorf("not an ELF module (%v): %w", err, errdefs.ErrInvalidArgument)
	}
	if f.Type != elf.ET_REL {
		return nil, fmt.Errorf("ELF type %s is not a module: %w", f.Type, errdefs.ErrInvalidArgument)
	}
	s := f.Section(".modinfo")
	if s == nil {
		return nil, fmt.Errorf("no .modinfo section: %w", errdefs.ErrInvalidArgument)
	}
	b, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo: %w", err)
	}
	info := map[string]string{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		if _, seen := info[k]; !seen {
			info[k] = v
		}
	}
	return info, nil
}

// depFile renders modules.dep in depmod's format for the resolved modules:
// each line names a module and all its transitive dependencies, in the
// reverse of load order, which is how modprobe reads them.
func (r *resolution) depFile() []byte {
	pos := map[string]int{}
	byName := map[string]*module{}
	for i, m := range r.order {
		pos[m.name] = i
		byName[m.name] = m
	}
	var b bytes.Buffer
	for _, m := range r.order {
		all := map[string]bool{}
		var walk func(n string)
		walk = func(n string) {
			for _, d := range byName[n].deps {
				if _, ok := byName[d]; ok && !all[d] {
					all[d] = true
					walk(d)
				}
			}
		}
		walk(m.name)
		deps := make([]string, 0, len(all))
		for d := range all {
			deps = append(deps, d)
		}
		slices.SortFunc(deps, func(a, b string) int { return pos[b] - pos[a] })
		b.WriteString(m.rel + ":")
		for _, d := range deps {
			b.WriteString(" " + byName[d].rel)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}
