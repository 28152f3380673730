package image

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/catalog"
	"github.com/bangervm/banger/internal/ext4"
	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/image/flatten"
	"github.com/bangervm/banger/internal/names"
)

// pullCatalog gets a catalog image. Only debootstrap entries (built with
// mmdebstrap, which does what debootstrap does without root) exist today.
func (s *Store) pullCatalog(ctx context.Context, e catalog.Entry, req api.PullImageRequest, progress func(api.Event)) (api.Image, error) {
	nm := req.Name
	if nm == "" {
		nm = e.Name
	}
	if err := names.Validate("image", nm); err != nil {
		return api.Image{}, err
	}
	if err := s.refusePromoted(ctx, nm); err != nil {
		return api.Image{}, err
	}
	if e.Kind != "debootstrap" {
		return api.Image{}, fmt.Errorf("catalog image %s: kind %q is not supported by this banger: %w", e.Name, e.Kind, errdefs.ErrInvalidArgument)
	}
	mirror := s.cfg.DebianMirror
	if mirror == "" {
		var err error
		if mirror, err = DebianMirror("/etc/apt"); err != nil {
			return api.Image{}, err
		}
	}
	// A local build has no registry digest; the recipe identifies it, so
	// pulls of the same recipe coalesce and reuse one rootfs.
	sum := sha256.Sum256([]byte(strings.Join(append([]string{e.Kind, e.Source, mirror, fmt.Sprint(req.SizeBytes)}, e.Packages...), "\x00")))
	digest := "local:" + hex.EncodeToString(sum[:])
	b, ok := s.publishedFor(ctx, digest)
	if !ok {
		var err error
		b, _, err = s.pulls.do(ctx, digest, progress, func(ctx context.Context, progress func(api.Event)) (built, error) {
			return s.buildDebootstrap(ctx, e, mirror, digest, req.SizeBytes, progress)
		})
		if err != nil {
			return api.Image{}, fmt.Errorf("build %s: %w", e.Name, err)
		}
	}
	return s.record(ctx, nm, e.Name, "debootstrap", req.Kernel, b)
}

// buildDebootstrap builds a catalog Debian image with mmdebstrap, as
// whatever user the daemon runs as: mmdebstrap writes a tar (ownership
// recorded by fakeroot, not on disk), which is applied like an OCI layer
// onto a staging tree, whose ownership and modes the unprivileged tree
// cannot hold go into the ext4 as fixups.
func (s *Store) buildDebootstrap(ctx context.Context, e catalog.Entry, mirror, digest string, size int64, progress func(api.Event)) (built, error) {
	stage, err := s.stagingDir("debootstrap")
	if err != nil {
		return built{}, err
	}
	defer os.RemoveAll(stage)
	root, tmp := filepath.Join(stage, "root"), filepath.Join(stage, "tmp")
	for _, d := range []string{root, tmp} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return built{}, err
		}
	}
	tree, err := flatten.New(root)
	if err != nil {
		return built{}, err
	}
	defer tree.Close()
	progress(api.Event{Phase: "debootstrap", Message: fmt.Sprintf("mmdebstrap %s from %s (about a minute)", e.Source, mirror)})
	if err := s.mmdebstrapInto(ctx, tree, hostcmd.MmdebstrapOptions{
		Suite: e.Source, Mirror: mirror, Variant: "minbase", Include: e.Packages, TempDir: tmp,
		Log: &lineProgress{phase: "debootstrap", progress: progress},
	}); err != nil {
		return built{}, err
	}
	progress(api.Event{Phase: "ext4", Message: "building ext4 root filesystem"})
	out := filepath.Join(stage, "rootfs.ext4")
	if err := ext4.Build(ctx, ext4.Options{Dir: root, Output: out, SizeBytes: size, ContentBytes: tree.ContentSize(), Inodes: tree.Inodes(), Fixups: tree.Fixups()}); err != nil {
		return built{}, err
	}
	st, err := os.Stat(out)
	if err != nil {
		return built{}, err
	}
	s.mu.Lock()
	final, err := s.publish(out, digest)
	s.mu.Unlock()
	if err != nil {
		return built{}, err
	}
	return built{Digest: digest, RootFS: final, SizeBytes: st.Size(), ContentBytes: tree.ContentSize(), Config: e.Config}, nil
}

// mmdebstrapInto streams mmdebstrap's tar into tree, never holding the
// whole tar on disk.
func (s *Store) mmdebstrapInto(ctx context.Context, tree *flatten.Tree, o hostcmd.MmdebstrapOptions) error {
	pr, pw := io.Pipe()
	applied := make(chan error, 1)
	go func() {
		err := tree.Apply(ctx, pr)
		if err == nil {
			// The tar's end-of-archive padding: mmdebstrap fails on a
			// closed pipe.
			_, err = io.Copy(io.Discard, pr)
		}
		pr.CloseWithError(err)
		applied <- err
	}()
	o.Out = pw
	runErr := hostcmd.Mmdebstrap(ctx, o)
	pw.CloseWithError(runErr)
	// When mmdebstrap fails, Apply fails reading the pipe with the same
	// error; only an error of Apply's own is worth naming.
	if err := <-applied; err != nil && (runErr == nil || !errors.Is(err, runErr)) {
		return fmt.Errorf("unpack mmdebstrap's tar: %w", err)
	}
	return runErr
}

// lineProgress turns a tool's output lines into progress events.
type lineProgress struct {
	phase    string
	progress func(api.Event)
	buf      []byte
}

func (l *lineProgress) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			break
		}
		line := strings.TrimSpace(string(l.buf[:i]))
		l.buf = l.buf[i+1:]
		if line != "" {
			l.progress(api.Event{Phase: l.phase, Message: line})
		}
	}
	return len(p), nil
}

// DebianMirror returns the first Debian or Ubuntu archive URI configured in
// the host's apt sources (deb822 .sources files or one-line sources.list),
// skipping security and updates suites.
func DebianMirror(aptDir string) (string, error) {
	var files []string
	files = append(files, filepath.Join(aptDir, "sources.list"))
	more, _ := filepath.Glob(filepath.Join(aptDir, "sources.list.d", "*"))
	files = append(files, more...)
	for _, f := range files {
		if m := mirrorIn(f); m != "" {
			return m, nil
		}
	}
	return "", fmt.Errorf("no Debian mirror found in %s: set debian_mirror in config.toml: %w", aptDir, errdefs.ErrFailedPrecondition)
}

func mirrorIn(file string) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	deb822 := strings.HasSuffix(file, ".sources")
	if !deb822 && !strings.HasSuffix(file, ".list") {
		return ""
	}
	return scanMirror(f, deb822)
}

func scanMirror(r io.Reader, deb822 bool) string {
	sc := bufio.NewScanner(r)
	var uris []string
	var isDeb bool
	flush := func() string {
		defer func() { uris, isDeb = nil, false }()
		if !isDeb {
			return ""
		}
		for _, u := range uris {
			if !strings.Contains(u, "security") {
				return strings.TrimRight(u, "/")
			}
		}
		return ""
	}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		if deb822 {
			if line == "" {
				if m := flush(); m != "" {
					return m
				}
				continue
			}
			k, v, _ := strings.Cut(line, ":")
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "types":
				isDeb = strings.Contains(" "+v+" ", " deb ")
			case "uris":
				uris = strings.Fields(v)
			}
			continue
		}
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "deb" {
			i := 1
			if strings.HasPrefix(f[1], "[") {
				for i < len(f) && !strings.HasSuffix(f[i], "]") {
					i++
				}
				i++
			}
			if i < len(f) && !strings.Contains(f[i], "security") {
				return strings.TrimRight(f[i], "/")
			}
		}
	}
	if deb822 {
		return flush()
	}
	return ""
}
