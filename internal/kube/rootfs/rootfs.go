// Package rootfs writes the root filesystem a container sees as one tar:
// in a launcher Pod, the rootfs init container runs banger's own static
// banger-launcher inside the Sandbox's image as the kubelet pulled and
// unpacked it, and hands the image's files to the launcher this way. No
// program of the image runs; its files are only read.
//
// What the container runtime mounted over the image (the kubelet's
// /etc/hosts, /etc/hostname and /etc/resolv.conf, /dev, /proc, /sys,
// banger's own volumes) is left out: a mount point (in the mount table,
// or on another device than the root) is not the image's. /proc, /sys and /dev are
// written as empty directories, mount points for the guest; /etc/hosts,
// when mounted over, as localhost's lines alone.
package rootfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/api"
)

// Limits bound what Write reads: the image is the user's choice.
type Limits struct {
	Bytes int64 // file content, in all
	Files int   // entries of every kind
	// Skip are directories left out, relative to the root (the init
	// containers' MountDir).
	Skip []string
}

// Stats is what Write wrote.
type Stats struct {
	Files   int
	Bytes   int64
	Skipped []string // mount points left out, relative to the root
}

// emptyDirs are written without their content: the guest mounts its own.
var emptyDirs = []string{"dev", "proc", "sys"}

// standIns replace files the container runtime mounted over the image's
// own (which the mount hides): the kubelet's describe the Pod, not the
// VM. /etc/hostname and /etc/resolv.conf get none: the agent sets the
// guest's hostname, and writes resolv.conf when the VM has a network.
var standIns = map[string]string{
	"etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}

type writer struct {
	ctx    context.Context
	root   string
	dev    uint64
	tw     *tar.Writer
	limits Limits
	stats  Stats
	links  map[[2]uint64]string // (dev, inode) of a file with links → its first name
	mounts map[string]bool      // mount points below root, relative to it
	buf    []byte
}

// Write writes the tree at root, which must be a directory, to out as a
// tar, with owners, modes, times, extended attributes, symbolic and hard
// links, device nodes and FIFOs; sockets are left out. It fails once the
// tree passes limits.
func Write(ctx context.Context, root string, out io.Writer, limits Limits) (Stats, error) {
	fi, err := os.Lstat(root)
	if err != nil {
		return Stats{}, err
	}
	if !fi.IsDir() {
		return Stats{}, fmt.Errorf("%s is not a directory", root)
	}
	mounts, err := mountPoints(root)
	if err != nil {
		return Stats{}, err
	}
	w := &writer{ctx: ctx, root: root, dev: fi.Sys().(*syscall.Stat_t).Dev, tw: tar.NewWriter(out), limits: limits,
		links: map[[2]uint64]string{}, mounts: mounts, buf: make([]byte, 1<<20)}
	if err := w.entry(".", fi); err != nil {
		return w.stats, err
	}
	if err := w.dir("."); err != nil {
		return w.stats, err
	}
	return w.stats, w.tw.Close()
}

// dir writes the children of the directory rel, in name order.
func (w *writer) dir(rel string) error {
	ents, err := os.ReadDir(filepath.Join(w.root, rel))
	if err != nil {
		return fmt.Errorf("read %s: %w", rel, err)
	}
	for _, e := range ents {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		name := path.Join(rel, e.Name())
		fi, err := os.Lstat(filepath.Join(w.root, name))
		if err != nil {
			return fmt.Errorf("stat %s: %w", name, err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		empty := rel == "." && slices.Contains(emptyDirs, e.Name()) && fi.IsDir()
		if (st.Dev != w.dev || w.mounts[name] || slices.Contains(w.limits.Skip, name)) && !empty {
			w.stats.Skipped = append(w.stats.Skipped, name)
			if body, ok := standIns[name]; ok && fi.Mode().IsRegular() {
				if err := w.standIn(name, body); err != nil {
					return err
				}
			}
			continue
		}
		if err := w.entry(name, fi); err != nil {
			return err
		}
		if fi.IsDir() && !empty {
			if err := w.dir(name); err != nil {
				return err
			}
		}
	}
	return nil
}

// entry writes one path's header and, for a regular file, its content.
func (w *writer) entry(name string, fi os.FileInfo) error {
	w.stats.Files++
	if w.limits.Files > 0 && w.stats.Files > w.limits.Files {
		return fmt.Errorf("the image has more than %d files: banger's limit for an image on a cluster", w.limits.Files)
	}
	st := fi.Sys().(*syscall.Stat_t)
	full := filepath.Join(w.root, name)
	hdr := &tar.Header{
		Name: name, Mode: int64(st.Mode & 0o7777), Uid: int(st.Uid), Gid: int(st.Gid),
		ModTime: time.Unix(st.Mtim.Unix()), Format: tar.FormatPAX,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		if name == "." {
			hdr.Name = "./"
		}
	case unix.S_IFREG:
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := w.links[key]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			break
		}
		if st.Nlink > 1 {
			w.links[key] = name
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
		w.stats.Bytes += st.Size
		if w.limits.Bytes > 0 && w.stats.Bytes > w.limits.Bytes {
			return fmt.Errorf("the image holds more than %d bytes of files: banger's limit for an image on a cluster (a third of the room the Sandbox's claim keeps beside its disk)", w.limits.Bytes)
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(full)
		if err != nil {
			return fmt.Errorf("read link %s: %w", name, err)
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		// A socket is made by a running program, not shipped.
		w.stats.Files--
		return nil
	}
	if err := w.xattrs(full, hdr); err != nil {
		return fmt.Errorf("extended attributes of %s: %w", name, err)
	}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	f, err := os.OpenFile(full, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		// O_NOATIME is for the file's owner (or CAP_FOWNER) only.
		f, err = os.OpenFile(full, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	defer f.Close()
	// Exactly the size written in the header: the image's files do not
	// change (nothing of the image runs), but a short file must not
	// shift the entries after it.
	if _, err := io.CopyBuffer(w.tw, io.LimitReader(f, st.Size), w.buf); err != nil {
		return fmt.Errorf("copy %s: %w", name, err)
	}
	return nil
}

// standIn writes body as name: root's, mode 0644.
func (w *writer) standIn(name, body string) error {
	w.stats.Files++
	hdr := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	_, err := io.WriteString(w.tw, body)
	return err
}

// xattrs records path's extended attributes that can be read (security.*
// file capabilities among them); trusted.* needs CAP_SYS_ADMIN and is
// left out, as the overlay's own attributes are.
func (w *writer) xattrs(p string, hdr *tar.Header) error {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		if errors.Is(err, unix.ENOTSUP) {
			err = nil
		}
		return err
	}
	list := make([]byte, sz)
	if sz, err = unix.Llistxattr(p, list); err != nil {
		return err
	}
	for _, k := range strings.Split(strings.TrimRight(string(list[:sz]), "\x00"), "\x00") {
		if k == "" {
			continue
		}
		v := make([]byte, 64<<10)
		n, err := unix.Lgetxattr(p, k, v)
		if err != nil {
			if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EACCES) {
				continue
			}
			return fmt.Errorf("%s: %w", k, err)
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+k] = string(v[:n])
	}
	return nil
}

// mountPoints lists the mount points below root, relative to it, from
// this thread's mount table: a bind mount from the root's own file system
// (a file over a file) has the root's device number.
func mountPoints(root string) (map[string]bool, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("mount table: %w", err)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		rel, err := filepath.Rel(root, unescapeMount(f[4]))
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
			continue
		}
		out[rel] = true
	}
	return out, nil
}

// unescapeMount undoes the kernel's octal escapes (\040 for a space) in a
// mount table path.
func unescapeMount(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Config is the part of the image's config a container can see: its
// environment (the image's Env, less what the container runtime and the
// kubelet add: HOSTNAME and the kubernetes Service's variables; the Pod
// sets no variables of its own for this container) and its working
// directory. The image's entrypoint, command and user are not visible
// from inside: the container's command replaced them.
func Config(environ []string, workingDir string) api.ImageConfig {
	var env []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOSTNAME" || strings.HasPrefix(k, "KUBERNETES_") {
			continue
		}
		env = append(env, kv)
	}
	return api.ImageConfig{Env: env, WorkingDir: workingDir}
}
