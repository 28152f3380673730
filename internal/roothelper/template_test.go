package roothelper

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine/firecracker"
	"github.com/bangervm/banger/internal/testutil"
)

const templateVMID = "tmpl-0123abcd"

// templateFixture is a jail fixture whose policy has a template cache
// with one template being made (pending, new42): the template VM's jail
// in it as buildJail and the jailer leave it (root's down to the chroot,
// the chroot the owner's), holding the snapshot's memory and state files
// the owner's Firecracker wrote.
type templateFixture struct {
	*jailFixture
	pending, chroot string
}

func newTemplateFixture(t *testing.T) *templateFixture {
	t.Helper()
	f := &templateFixture{jailFixture: newJailFixture(t)}
	f.policy.Templates = filepath.Join(filepath.Dir(f.policy.VMs), "cache", "templates")
	f.pending = filepath.Join(f.policy.Templates, "new42")
	f.chroot = filepath.Join(f.pending, firecracker.JailDirName, "firecracker", templateVMID, "root")
	if err := os.MkdirAll(f.chroot, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Dir(f.policy.Templates), f.policy.Templates, f.pending, f.chroot} {
		os.Chown(d, jailOwner, jailOwner)
	}
	for _, name := range []string{firecracker.TemplateMemory, firecracker.TemplateSnapshot} {
		p := filepath.Join(f.chroot, name)
		if err := os.WriteFile(p, []byte(name+" of the template"), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chown(p, jailOwner, jailOwner)
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(f.policy.Templates)) })
	return f
}

func (f *templateFixture) config() *firecracker.JailerConfig {
	c := f.good()
	c.ID = templateVMID
	c.ChrootBase = filepath.Join(f.pending, firecracker.JailDirName)
	return &c
}

// seal validates and runs a sealTemplate request as the server does.
func (f *templateFixture) seal(c *firecracker.JailerConfig) error {
	if err := validate(&request{Op: OpSealTemplate, Jailer: c}, jailOwner, nil, &f.policy); err != nil {
		return err
	}
	return sealTemplate(c, &f.policy)
}

// TestSealTemplate: the helper copies a template VM's snapshot files into
// the template as new files of root's, read-only, out of the owner's reach
// (as whom every jailed Firecracker runs, the template VM's included:
// what it wrote stays its own, and is not the template).
func TestSealTemplate(t *testing.T) {
	testutil.RequireRoot(t)
	f := newTemplateFixture(t)
	if err := f.seal(f.config()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{firecracker.TemplateMemory, firecracker.TemplateSnapshot} {
		p := filepath.Join(f.pending, name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 0 || st.Gid != 0 || fi.Mode().Perm() != 0o444 {
			t.Errorf("%s: %d:%d %v, want root:root 0444", name, st.Uid, st.Gid, fi.Mode().Perm())
		}
		inJail, _ := os.Stat(filepath.Join(f.chroot, name))
		if os.SameFile(fi, inJail) || inJail.Sys().(*syscall.Stat_t).Uid != jailOwner {
			t.Errorf("%s in the template is the file the template VM wrote, or that was changed; want a copy", name)
		}
		if b, _ := os.ReadFile(p); string(b) != name+" of the template" {
			t.Errorf("%s: %q", name, b)
		}
		if err := asOwner("sh", "-c", `exec 3>>"$0"`, p); err == nil {
			t.Errorf("the owner can still write the sealed %s", name)
		}
		if err := asOwner("chmod", "0666", p); err == nil {
			t.Errorf("the owner can still chmod the sealed %s", name)
		}
	}
}

func TestSealTemplateRefuses(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, f *templateFixture, c *firecracker.JailerConfig)
		class error
	}{
		{"a jail outside the template cache", func(t *testing.T, f *templateFixture, c *firecracker.JailerConfig) {
			c.ChrootBase = filepath.Join(filepath.Dir(f.policy.VMs), "elsewhere", "new42", firecracker.JailDirName)
		}, errdefs.ErrPermissionDenied},
		{"a path with ..", func(t *testing.T, f *templateFixture, c *firecracker.JailerConfig) {
			c.ChrootBase = filepath.Join(f.policy.Templates, "new43") + "/../new42/" + firecracker.JailDirName
		}, errdefs.ErrPermissionDenied},
		{"a finished template's directory", func(t *testing.T, f *templateFixture, c *firecracker.JailerConfig) {
			c.ChrootBase = filepath.Join(f.policy.Templates, "0123abcd", firecracker.JailDirName)
		}, errdefs.ErrPermissionDenied},
		{"a VM's jail", func(t *testing.T, f *templateFixture, c *firecracker.JailerConfig) {
			*c = f.good()
		}, errdefs.ErrPermissionDenied},
		{"a helper without --templates", func(t *testing.T, f *templateFixture, c *firecracker.JailerConfig) {
			f.policy.Templates = ""
		}, errdefs.ErrPermissionDenied},
		{"a symlink to the pending template", func(t *testing.T, f *templateFixture, c *firecracker.JailerConfig) {
			link := filepath.Join(f.policy.Templates, "new43")
			os.Symlink(f.pending, link)
			c.ChrootBase = filepath.Join(link, firecracker.JailDirName)
		}, errdefs.ErrPermissionDenied},
		{"memory a symlink", func(t *testing.T, f *templateFixture, c *firecracker.JailerConfig) {
			mem := filepath.Join(f.chroot, firecracker.TemplateMemory)
			os.Remove(mem)
			os.Symlink("/etc/passwd", mem)
		}, errdefs.ErrPermissionDenied},
		{"memory with a second link", func(t *testing.T, f *templateFixture, c *firecracker.JailerConfig) {
			os.Link(filepath.Join(f.chroot, firecracker.TemplateMemory), filepath.Join(f.chroot, "kept"))
		}, errdefs.ErrPermissionDenied},
		{"a state file not the owner's", func(t *testing.T, f *templateFixture, c *firecracker.JailerConfig) {
			os.Chown(filepath.Join(f.chroot, firecracker.TemplateSnapshot), 0, 0)
		}, errdefs.ErrPermissionDenied},
		{"a jail directory of the owner's", func(t *testing.T, f *templateFixture, c *firecracker.JailerConfig) {
			os.Chown(filepath.Join(f.pending, firecracker.JailDirName), jailOwner, jailOwner)
		}, errdefs.ErrPermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newTemplateFixture(t)
			c := f.config()
			tc.setup(t, f, c)
			err := f.seal(c)
			if err == nil || !errors.Is(err, tc.class) {
				t.Fatalf("seal: %v, want %v", err, tc.class)
			}
			// Nothing was sealed: the template VM's files stay the owner's.
			for _, name := range []string{firecracker.TemplateMemory, firecracker.TemplateSnapshot} {
				if _, err := os.Lstat(filepath.Join(f.pending, name)); err == nil {
					t.Errorf("%s linked into the template after a refusal", name)
				}
			}
			if fi, err := os.Lstat(filepath.Join(f.chroot, firecracker.TemplateMemory)); err == nil && fi.Mode().IsRegular() && fi.Sys().(*syscall.Stat_t).Uid == 0 {
				t.Errorf("memory made root's after a refusal")
			}
		})
	}
}

// sealedTemplate seals f's template and renames it to a finished
// template's directory, returning that.
func (f *templateFixture) sealedTemplate(t *testing.T) string {
	t.Helper()
	if err := f.seal(f.config()); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(f.pending, firecracker.JailDirName))
	dir := filepath.Join(f.policy.Templates, "0123abcd")
	if err := os.Rename(f.pending, dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func templateFiles(dir string) []firecracker.JailFile {
	return []firecracker.JailFile{
		{Name: firecracker.TemplateMemory, Path: filepath.Join(dir, firecracker.TemplateMemory)},
		{Name: firecracker.TemplateSnapshot, Path: filepath.Join(dir, firecracker.TemplateSnapshot)},
	}
}

// TestTemplateFilesInJail: a clone's jail gets hard links of a sealed
// template's files, and of nothing else under those names.
func TestTemplateFilesInJail(t *testing.T) {
	testutil.RequireRoot(t)
	f := newTemplateFixture(t)
	dir := f.sealedTemplate(t)
	good := append(append([]firecracker.JailFile{}, f.files...), templateFiles(dir)...)
	if err := validateJailFiles(good, &f.policy); err != nil {
		t.Fatalf("a sealed template's files: %v", err)
	}
	for _, tc := range []struct {
		name  string
		edit  func(fs []firecracker.JailFile) []firecracker.JailFile
		class error
	}{
		{"outside the template cache", func(fs []firecracker.JailFile) []firecracker.JailFile {
			fs[5].Path = filepath.Join(f.vmDir, firecracker.TemplateMemory)
			return fs
		}, errdefs.ErrPermissionDenied},
		{"a path with ..", func(fs []firecracker.JailFile) []firecracker.JailFile {
			fs[5].Path = dir + "/../0123abcd/" + firecracker.TemplateMemory
			return fs
		}, errdefs.ErrPermissionDenied},
		{"a template being made", func(fs []firecracker.JailFile) []firecracker.JailFile {
			fs[5].Path = filepath.Join(f.policy.Templates, "new7", firecracker.TemplateMemory)
			return fs
		}, errdefs.ErrPermissionDenied},
		{"another file's name", func(fs []firecracker.JailFile) []firecracker.JailFile {
			fs[5].Path = filepath.Join(dir, "meta.json")
			return fs
		}, errdefs.ErrPermissionDenied},
		{"writable", func(fs []firecracker.JailFile) []firecracker.JailFile {
			fs[5].Writable = true
			return fs
		}, errdefs.ErrPermissionDenied},
		{"memory without its state", func(fs []firecracker.JailFile) []firecracker.JailFile {
			return fs[:6]
		}, errdefs.ErrPermissionDenied},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := tc.edit(append([]firecracker.JailFile{}, good...))
			if err := validateJailFiles(fs, &f.policy); !errors.Is(err, tc.class) {
				t.Errorf("validate: %v, want %v", err, tc.class)
			}
		})
	}
	t.Run("a helper without --templates", func(t *testing.T) {
		p := f.policy
		p.Templates = ""
		if err := validateJailFiles(good, &p); !errdefs.IsPermissionDenied(err) {
			t.Errorf("validate: %v, want permission denied", err)
		}
	})

	root := t.TempDir()
	rootDir, err := os.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer rootDir.Close()
	place := func(jf firecracker.JailFile) error {
		fd, err := os.Open(jf.Path)
		if err != nil {
			return err
		}
		defer fd.Close()
		var st unix.Stat_t
		if err := unix.Fstat(int(fd.Fd()), &st); err != nil {
			return err
		}
		return placeTemplateFile(rootDir, jf, &st)
	}
	mem := templateFiles(dir)[0]
	if err := place(mem); err != nil {
		t.Fatalf("place a sealed memory file: %v", err)
	}
	a, _ := os.Stat(mem.Path)
	b, err := os.Stat(filepath.Join(root, mem.Name))
	if err != nil || !os.SameFile(a, b) {
		t.Errorf("memory in the jail: %v; want a hard link of %s", err, mem.Path)
	}
	os.Remove(filepath.Join(root, mem.Name))

	// Reached through a symlink: refused, though the file is sealed.
	link := filepath.Join(f.policy.Templates, "fedcba98")
	os.Symlink(dir, link)
	if err := place(firecracker.JailFile{Name: mem.Name, Path: filepath.Join(link, mem.Name)}); !errdefs.IsPermissionDenied(err) {
		t.Errorf("a sealed file through a symlinked template: %v, want permission denied", err)
	}
	// Not sealed: the owner's, or root's but writable.
	unsealed := filepath.Join(f.policy.Templates, "0123abce", firecracker.TemplateMemory)
	os.MkdirAll(filepath.Dir(unsealed), 0o755)
	os.WriteFile(unsealed, []byte("owner's"), 0o444)
	for _, owner := range []int{jailOwner, 0} {
		os.Chown(unsealed, owner, owner)
		os.Chmod(unsealed, map[int]os.FileMode{jailOwner: 0o444, 0: 0o644}[owner])
		if err := place(firecracker.JailFile{Name: mem.Name, Path: unsealed}); !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), "not sealed") {
			t.Errorf("an unsealed file (uid %d): %v, want permission denied", owner, err)
		}
	}
	if names, _ := os.ReadDir(root); len(names) > 0 {
		t.Errorf("files left in the jail after refusals: %v", names)
	}
}
