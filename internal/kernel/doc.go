// Package kernel turns kernel sources — a vmlinux or bzImage file, a Debian
// linux-image .deb, or the flattened file tree of an OCI kernel image — into
// a bootable kernel directory for microVMs.
//
// Every import fills a staging directory chosen by the caller and returns an
// Info; the caller owns the directory (naming, recording and atomically
// publishing it, or removing it on error). Nothing is written outside it:
// scratch files live in a temporary subdirectory that is removed before the
// import returns. A staged directory holds:
//
//	vmlinux     the uncompressed x86-64 ELF kernel, always present. Given
//	            directly, or extracted from a bzImage in Go. Firecracker
//	            needs it; with the PVH note (Info.PVH) QEMU's microvm boots
//	            it about 0.3 s faster than a bzImage.
//	bzImage     the original compressed image, only when the source was one.
//	initrd.img  optional: a gzip-compressed newc initramfs, either the
//	            user's (copied as is) or generated from a modules tree.
//
// The modules tree itself is not kept: the generated initramfs carries the
// only modules a guest loads at boot.
//
// # Generated initramfs
//
// Distribution kernels build virtio, vsock and overlayfs as modules, so the
// guest has to load them before it can see its disks. The initramfs holds
// just those modules (DefaultModules) and their dependencies, computed from
// each module's .modinfo section — a .deb ships no modules.dep, and depmod is
// not needed on the host. Modules built into the kernel (modules.builtin) are
// skipped, compressed modules are stored decompressed. Layout:
//
//	dev/console                      character device 5:1, so /init has a console
//	lib/modules/<ver>/kernel/.../*.ko
//	lib/modules/<ver>/modules.dep    depmod's format, for busybox modprobe
//	lib/modules/<ver>/modules.builtin  when the source has one
//	etc/banger/modules.load          absolute module paths, dependencies first
//
// Entries are owned by 0:0 with mtime 0 and written in name order, so the
// same modules give the same bytes.
//
// # Seam for the guest agent
//
// This initramfs deliberately has no /init. The kernel unpacks several
// concatenated cpio archives (each may be compressed on its own) into the
// same rootfs, so at boot the engine appends a second archive holding the
// agent as /init. That /init loads the files listed in
// etc/banger/modules.load in order (insmod, or finit_module), then mounts
// the root disk. Keeping the two apart lets one kernel directory serve every
// agent version. A kernel with everything built in gets no initrd; the
// agent's archive is then the whole initramfs and must bring its own
// dev/console.
package kernel
