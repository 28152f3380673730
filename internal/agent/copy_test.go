package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
)

func TestTarOutIn(t *testing.T) {
	c := newClient(t, HandlerConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	src := filepath.Join(t.TempDir(), "src")
	must(t, os.MkdirAll(filepath.Join(src, "a/b"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "secret"), []byte("s"), 0o600))
	must(t, os.WriteFile(filepath.Join(src, "a/b/with spaces"), []byte("sp"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "a/suid"), []byte("x"), 0o755))
	must(t, os.Chmod(filepath.Join(src, "a/suid"), 0o755|fs.ModeSetuid))
	must(t, os.Symlink("a/b/with spaces", filepath.Join(src, "link")))

	rc, err := c.TarOut(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	archive, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := c.TarIn(ctx, dst, bytes.NewReader(archive)); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]fs.FileMode{
		"src":                 fs.ModeDir | 0o755,
		"src/run.sh":          0o755,
		"src/secret":          0o600,
		"src/a/suid":          0o755 | fs.ModeSetuid,
		"src/a/b/with spaces": 0o644,
		"src/link":            fs.ModeSymlink | 0o777,
	} {
		fi, err := os.Lstat(filepath.Join(dst, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode(), want)
		}
	}
	if l, _ := os.Readlink(filepath.Join(dst, "src/link")); l != "a/b/with spaces" {
		t.Errorf("link -> %q", l)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "src/link")); string(b) != "sp" {
		t.Errorf("through link: %q", b)
	}
}

func TestTarErrors(t *testing.T) {
	c := newClient(t, HandlerConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir := t.TempDir()

	if _, err := c.TarOut(ctx, filepath.Join(dir, "missing")); !errdefs.IsNotFound(err) {
		t.Errorf("tarOut of a missing path: %v", err)
	}
	if _, err := c.TarOut(ctx, "relative"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("tarOut of a relative path: %v", err)
	}
	if err := c.TarIn(ctx, filepath.Join(dir, "missing"), bytes.NewReader(nil)); !errdefs.IsNotFound(err) {
		t.Errorf("tarIn to a missing dir: %v", err)
	}

	hostile := map[string][]tar.Header{
		"dot dot":  {{Name: "../x", Typeflag: tar.TypeReg}},
		"absolute": {{Name: "/abs", Typeflag: tar.TypeReg}},
		"through a symlink": {
			{Name: "evil", Linkname: "/", Typeflag: tar.TypeSymlink},
			{Name: "evil/etc/x", Typeflag: tar.TypeReg},
		},
	}
	for name, hdrs := range hostile {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, h := range hdrs {
				h.Mode = 0o644
				must(t, tw.WriteHeader(&h))
			}
			// Padding after the archive must not confuse the agent.
			tw.Close()
			buf.Write(make([]byte, 64<<10))
			target := filepath.Join(dir, name)
			must(t, os.Mkdir(target, 0o755))
			err := c.TarIn(ctx, target, &buf)
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if _, err := os.Lstat(filepath.Join(dir, "x")); err == nil {
				t.Error("wrote outside the directory")
			}
		})
	}

	// A clean archive followed by padding.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	must(t, tw.WriteHeader(&tar.Header{Name: "ok", Typeflag: tar.TypeReg, Mode: 0o640, Size: 2}))
	tw.Write([]byte("hi"))
	tw.Close()
	buf.Write(make([]byte, 100<<10))
	if err := c.TarIn(ctx, dir, &buf); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "ok")); string(b) != "hi" {
		t.Errorf("ok = %q", b)
	}
}

func TestTarOutCancel(t *testing.T) {
	c := newClient(t, HandlerConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "big"), make([]byte, 8<<20), 0o644))
	rc, err := c.TarOut(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := tar.NewReader(rc).Next()
	if err != nil || hdr.Typeflag != tar.TypeDir {
		t.Fatalf("first header %+v, %v", hdr, err)
	}
	rc.Close()
	// The session still works.
	if _, err := c.Health(ctx); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
