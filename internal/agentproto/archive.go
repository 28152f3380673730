package agentproto

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/bangervm/banger/errdefs"
)

// WriteTar writes the archives of file trees, for the agent (tarOut) and
// the CLI on the host (vm cp); internal/untar extracts them.

// TarName is the entry name WriteTar uses for the tree at p by default: its
// base name, or "." for the root directory (whose entries are then named
// "./etc" and so on, and land directly in the directory they are extracted
// to).
func TarName(p string) string {
	b := filepath.Base(filepath.Clean(p))
	if b == "/" || b == string(filepath.Separator) {
		return "."
	}
	return b
}

// StreamTar runs WriteTar for root into a pipe that consume reads, and
// stops the walk if consume returns before reading it all. A failure to
// read root is returned wrapped ("read ROOT: ..."); else consume's error.
func StreamTar(ctx context.Context, root, name string, consume func(io.Reader) error) error {
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := WriteTar(ctx, pw, root, name)
		werr <- err
		pw.CloseWithError(err)
	}()
	err := consume(pr)
	pr.CloseWithError(errStreamEnded)
	if lerr := <-werr; lerr != nil && !errors.Is(lerr, errStreamEnded) {
		return fmt.Errorf("read %s: %w", root, lerr)
	}
	return err
}

var errStreamEnded = errors.New("tar stream consumer returned")

// WriteTar writes the file tree at root to w as a PAX tar. The entry for
// root is called name (one path element, see TarName), the others
// name/child/... A symbolic link, at root or below, is archived as a link,
// never followed. Entries keep mode bits (with setuid, setgid and sticky),
// modification time, numeric uid/gid and hard links between regular files;
// sockets are skipped. A missing root is an error of class ErrNotFound,
// returned before anything is written. Cancelling ctx stops the walk.
func WriteTar(ctx context.Context, w io.Writer, root, name string) error {
	if err := checkElem(name, true); err != nil {
		return err
	}
	if _, err := os.Lstat(root); err != nil {
		return errdefs.FromFS(err)
	}
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return errdefs.FromFS(err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		entry := name
		if rel != "." {
			entry = path.Join(name, filepath.ToSlash(rel))
			if name == "." {
				entry = "./" + entry
			}
		}
		return writeEntry(tw, p, entry, links)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, p, name string, links map[[2]uint64]string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return errdefs.FromFS(err)
	}
	if fi.Mode()&fs.ModeSocket != 0 {
		return nil
	}
	var link string
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("archive %s: %w", p, err)
	}
	hdr.Format = tar.FormatPAX
	hdr.Name = name
	if fi.IsDir() && !strings.HasSuffix(hdr.Name, "/") {
		hdr.Name += "/"
	}
	// Ownership travels as numbers; names would depend on either side's
	// /etc/passwd.
	hdr.Uname, hdr.Gname = "", ""
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
		key := [2]uint64{uint64(st.Dev), uint64(st.Ino)}
		if first, ok := links[key]; ok {
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = first
			hdr.Size = 0
			return tw.WriteHeader(hdr)
		}
		links[key] = name
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("archive %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("archive %s: %w", p, errdefs.FromFS(err))
	}
	defer f.Close()
	// The size is in the header already: a file that shrank meanwhile is
	// an error, one that grew is cut at the size.
	if _, err := io.CopyN(tw, f, hdr.Size); err != nil {
		return fmt.Errorf("archive %s: %w", p, err)
	}
	return nil
}

// checkElem accepts a single path element; dot allows ".".
func checkElem(e string, dot bool) error {
	if e == "" || e == ".." || strings.ContainsAny(e, "/\x00") || (e == "." && !dot) {
		return fmt.Errorf("bad entry name %q: %w", e, errdefs.ErrInvalidArgument)
	}
	return nil
}
