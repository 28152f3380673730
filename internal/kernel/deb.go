package kernel

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/bangervm/banger/errdefs"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// ImportDeb stages the kernel of a Debian or Ubuntu linux-image .deb, read
// in Go (no dpkg): /boot/vmlinuz-<ver> becomes vmlinux (+ bzImage), and the
// initramfs is generated from lib/modules/<ver>. Ubuntu ships most modules
// in a separate linux-modules package; with its linux-image .deb alone the
// virtio modules are reported in Info.MissingModules.
func ImportDeb(ctx context.Context, stageDir string, debPath string) (Info, error) {
	f, err := os.Open(debPath)
	if err != nil {
		return Info{}, fmt.Errorf("open deb: %w", errdefs.FromFS(err))
	}
	defer f.Close()
	data, name, err := debData(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return Info{}, fmt.Errorf("deb %s: %w", debPath, err)
	}
	r, closeFn, err := decompressDataTar(data, name)
	if err != nil {
		return Info{}, fmt.Errorf("deb %s: %w", debPath, err)
	}
	defer closeFn()
	info, err := importArchive(ctx, stageDir, r, debPath)
	if err != nil {
		return Info{}, fmt.Errorf("deb %s: %w", debPath, err)
	}
	return info, nil
}

// debData walks the ar archive of a .deb and returns a reader over its
// data.tar member and the member's name.
func debData(r io.Reader) (io.Reader, string, error) {
	var magic [8]byte
	if _, err := io.ReadFull(r, magic[:]); err != nil || string(magic[:]) != "!<arch>\n" {
		return nil, "", fmt.Errorf("not a .deb (no ar archive header): %w", errdefs.ErrInvalidArgument)
	}
	for {
		var hdr [60]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return nil, "", fmt.Errorf("no data.tar member (%v): %w", err, errdefs.ErrInvalidArgument)
		}
		if string(hdr[58:60]) != "`\n" {
			return nil, "", fmt.Errorf("corrupt ar member header: %w", errdefs.ErrInvalidArgument)
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(hdr[0:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return nil, "", fmt.Errorf("corrupt ar member size %q: %w", hdr[48:58], errdefs.ErrInvalidArgument)
		}
		if strings.HasPrefix(name, "data.tar") {
			return io.LimitReader(r, size), name, nil
		}
		if _, err := io.CopyN(io.Discard, r, size+size%2); err != nil {
			return nil, "", fmt.Errorf("read ar member %s: %w: %w", name, err, errdefs.ErrInvalidArgument)
		}
	}
}

// decompressDataTar opens a data.tar member by its suffix.
func decompressDataTar(r io.Reader, name string) (io.Reader, func(), error) {
	noop := func() {}
	switch name {
	case "data.tar":
		return r, noop, nil
	case "data.tar.xz":
		xr, err := xz.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w: %w", name, err, errdefs.ErrInvalidArgument)
		}
		return xr, noop, nil
	case "data.tar.zst":
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w: %w", name, err, errdefs.ErrInvalidArgument)
		}
		return zr, zr.Close, nil
	case "data.tar.gz":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w: %w", name, err, errdefs.ErrInvalidArgument)
		}
		return zr, noop, nil
	}
	return nil, nil, fmt.Errorf("unsupported member %s (expected data.tar, .xz, .zst or .gz): %w", name, errdefs.ErrInvalidArgument)
}
