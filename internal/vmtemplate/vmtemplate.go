// Package vmtemplate keeps VM templates in banger's cache directory: guests
// saved at their agent's ready point (see engine.Templater), from which VMs
// of the same shape start instead of booting. A template is keyed by
// everything its clones must match (engine, kernel, agent build, image,
// vCPUs, memory, disk layout, NIC); a key names files by path, size and
// modification time, so a changed kernel, agent or image makes its
// templates stale: never used again, removed by Prune.
//
// Each template is a directory <id>/ holding the engine's files and
// template.json; it is built in a temporary directory and renamed into
// place, so a directory with template.json is complete.
package vmtemplate

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/bangervm/banger/errdefs"
)

// MetaFile is the template's description, written last.
const MetaFile = "template.json"

// UsedFile's modification time is when a VM last started from the
// template (see Touch); created with the template.
const UsedFile = "used"

// FileID names a file and the version of it a template was made from.
type FileID struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	ModTime int64  `json:"modTime"` // Unix nanoseconds
}

// StatFile returns path's FileID.
func StatFile(path string) (FileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return FileID{}, err
	}
	return FileID{Path: path, Size: fi.Size(), ModTime: fi.ModTime().UnixNano()}, nil
}

// Key is everything a clone must share with its template.
type Key struct {
	Engine string `json:"engine"`
	// Kernel is the vmlinux and the kernel's initramfs (its modules);
	// Agent the banger-agent binary; Image the image's root file system.
	Kernel []FileID `json:"kernel"`
	Agent  FileID   `json:"agent"`
	Image  FileID   `json:"image"`
	// ImageConfig is a digest of the image's configuration (environment,
	// user, command, init), which goes into the boot configuration.
	ImageConfig string  `json:"imageConfig"`
	VCPU        int     `json:"vcpu"`
	MemoryMiB   int     `json:"memoryMiB"`
	Disks       []int64 `json:"disks"` // sizes, in order
	NIC         bool    `json:"nic"`
}

// ID is the key's name: a digest of all of it.
func (k Key) ID() string {
	b, _ := json.Marshal(k)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// files are the files the key names.
func (k Key) files() []FileID {
	return append(append([]FileID{}, k.Kernel...), k.Agent, k.Image)
}

// Stale says why the template's files no longer match the key ("" when
// they do).
func (k Key) Stale() string {
	for _, f := range k.files() {
		now, err := StatFile(f.Path)
		if err != nil {
			return fmt.Sprintf("%s is gone", f.Path)
		}
		if now != f {
			return fmt.Sprintf("%s changed", f.Path)
		}
	}
	return ""
}

// Template is one stored template.
type Template struct {
	ID        string    `json:"id"`
	Key       Key       `json:"key"`
	Dir       string    `json:"-"`
	CreatedAt time.Time `json:"createdAt"`
	// SizeBytes is the space its files take on disk (the memory file is
	// sparse).
	SizeBytes int64 `json:"-"`
	// LastUsed is when a VM last started from it (see Touch), else when
	// it was made.
	LastUsed time.Time `json:"-"`
}

// Store is the template directory. Its methods are safe for concurrent
// use by one process (the daemon).
type Store struct {
	dir string
	max int64
}

// New returns the store in dir (created on first use), whose templates
// Trim keeps within max bytes on disk; max <= 0 is no cap.
func New(dir string, max int64) *Store { return &Store{dir: dir, max: max} }

// Max is the store's cap in bytes, 0 for none.
func (s *Store) Max() int64 { return max(s.max, 0) }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Get returns the complete template of key, ErrNotFound when there is
// none or its files changed.
func (s *Store) Get(key Key) (Template, error) {
	t, err := s.load(key.ID())
	if err != nil {
		return Template{}, err
	}
	if why := t.Key.Stale(); why != "" {
		return Template{}, fmt.Errorf("template %s is stale: %s: %w", t.ID, why, errdefs.ErrNotFound)
	}
	return t, nil
}

func (s *Store) load(id string) (Template, error) {
	if !validID(id) {
		return Template{}, fmt.Errorf("template %q: not a template id: %w", id, errdefs.ErrInvalidArgument)
	}
	dir := filepath.Join(s.dir, id)
	b, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Template{}, fmt.Errorf("template %s: %w", id, errdefs.ErrNotFound)
	}
	if err != nil {
		return Template{}, fmt.Errorf("template %s: %w", id, err)
	}
	var t Template
	if err := json.Unmarshal(b, &t); err != nil || t.ID != id || t.Key.ID() != id {
		return Template{}, fmt.Errorf("template %s: %s is damaged: %w", id, MetaFile, errdefs.ErrNotFound)
	}
	t.Dir = dir
	t.SizeBytes = diskUsage(dir)
	t.LastUsed = t.CreatedAt
	if fi, err := os.Stat(filepath.Join(dir, UsedFile)); err == nil {
		t.LastUsed = fi.ModTime().UTC()
	}
	return t, nil
}

// Touch records that a VM started from template id now: Trim removes the
// least recently used first.
func (s *Store) Touch(id string) error {
	if !validID(id) {
		return fmt.Errorf("template %q: not a template id: %w", id, errdefs.ErrInvalidArgument)
	}
	p := filepath.Join(s.dir, id, UsedFile)
	now := time.Now()
	err := os.Chtimes(p, now, now)
	if errors.Is(err, fs.ErrNotExist) {
		err = os.WriteFile(p, nil, 0o600)
	}
	if err != nil {
		return fmt.Errorf("template %s: %w", id, err)
	}
	return nil
}

// Trim removes the least recently used templates, never keep (the one
// just made), until the store's complete templates take at most its cap
// on disk, and returns the ids removed. keep stays even if it alone is
// over the cap: the cap bounds what older templates may take. Templates
// being made are neither counted nor removed. A VM started from a removed
// template runs on (it holds the memory file open; its blocks are freed
// when the last such VM ends).
func (s *Store) Trim(keep string) ([]string, error) {
	if s.max <= 0 {
		return nil, nil
	}
	ts, err := s.List()
	if err != nil {
		return nil, err
	}
	var total int64
	for _, t := range ts {
		total += t.SizeBytes
	}
	slices.SortStableFunc(ts, func(a, b Template) int { return a.LastUsed.Compare(b.LastUsed) })
	var removed []string
	var errs []error
	for _, t := range ts {
		if total <= s.max {
			break
		}
		if t.ID == keep {
			continue
		}
		if err := os.RemoveAll(t.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove template %s: %w", t.ID, err))
			continue
		}
		total -= t.SizeBytes
		removed = append(removed, t.ID)
	}
	return removed, errors.Join(errs...)
}

// validID accepts the hex names Key.ID makes, so that an id from the
// command line never names a path outside the store.
func validID(id string) bool {
	if len(id) != 16 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// List returns the complete templates, newest first.
func (s *Store) List() ([]Template, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	var out []Template
	for _, e := range ents {
		if t, err := s.load(e.Name()); err == nil {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b Template) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, nil
}

// Remove deletes the template id (a prefix of at least 4 characters
// naming one template is enough).
func (s *Store) Remove(id string) error {
	full, err := s.resolve(id)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(s.dir, full)); err != nil {
		return fmt.Errorf("remove template %s: %w", full, err)
	}
	return nil
}

func (s *Store) resolve(id string) (string, error) {
	if validID(id) {
		if _, err := os.Stat(filepath.Join(s.dir, id)); err == nil {
			return id, nil
		}
	}
	ts, err := s.List()
	if err != nil {
		return "", err
	}
	var match []string
	for _, t := range ts {
		if len(id) >= 4 && strings.HasPrefix(t.ID, id) {
			match = append(match, t.ID)
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		return "", fmt.Errorf("template %q: %w", id, errdefs.ErrNotFound)
	}
	return "", fmt.Errorf("template %q names %d templates: give more of the id: %w", id, len(match), errdefs.ErrInvalidArgument)
}

// Prune removes stale templates (their kernel, agent or image changed or
// is gone) and leftovers of templates never finished, and returns what it
// removed. A template being made (see Create) is left alone when busy
// reports its directory.
func (s *Store) Prune(busy func(dir string) bool) ([]string, error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("prune templates: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		dir := filepath.Join(s.dir, e.Name())
		if busy != nil && busy(dir) {
			continue
		}
		if t, err := s.load(e.Name()); err == nil && t.Key.Stale() == "" {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}

// Unfinished returns the directories of templates being made or left
// unfinished by a daemon that died.
func (s *Store) Unfinished() []string {
	ents, _ := os.ReadDir(s.dir)
	var out []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(s.dir, e.Name(), MetaFile)); err != nil && e.IsDir() {
			out = append(out, filepath.Join(s.dir, e.Name()))
		}
	}
	return out
}

// Pending is a template being made, in a temporary directory.
type Pending struct {
	// Dir is where the engine writes the template's files.
	Dir string
	key Key
	s   *Store
}

// Create starts a template of key. An existing complete one is
// ErrAlreadyExists.
func (s *Store) Create(key Key) (*Pending, error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, fmt.Errorf("template store: %w", err)
	}
	id := key.ID()
	if _, err := os.Stat(filepath.Join(s.dir, id, MetaFile)); err == nil {
		return nil, fmt.Errorf("template %s: %w", id, errdefs.ErrAlreadyExists)
	}
	// Short names: the engine's sockets live in this directory.
	dir, err := os.MkdirTemp(s.dir, "new")
	if err != nil {
		return nil, fmt.Errorf("template store: %w", err)
	}
	return &Pending{Dir: dir, key: key, s: s}, nil
}

// Commit describes the template and moves it into place; remove is
// deleted from it first (files only the making needed).
func (p *Pending) Commit(remove ...string) (Template, error) {
	for _, f := range remove {
		os.Remove(filepath.Join(p.Dir, f))
	}
	id := p.key.ID()
	t := Template{ID: id, Key: p.key, CreatedAt: time.Now().UTC()}
	b, _ := json.MarshalIndent(t, "", "  ")
	meta := filepath.Join(p.Dir, MetaFile)
	if err := os.WriteFile(filepath.Join(p.Dir, UsedFile), nil, 0o600); err != nil {
		p.Abort()
		return Template{}, fmt.Errorf("template %s: %w", id, err)
	}
	if err := os.WriteFile(meta, b, 0o600); err != nil {
		p.Abort()
		return Template{}, fmt.Errorf("template %s: %w", id, err)
	}
	if f, err := os.Open(meta); err == nil {
		f.Sync()
		f.Close()
	}
	final := filepath.Join(p.s.dir, id)
	os.RemoveAll(final) // an incomplete or damaged one
	if err := os.Rename(p.Dir, final); err != nil {
		p.Abort()
		return Template{}, fmt.Errorf("template %s: %w", id, err)
	}
	t.Dir = final
	t.SizeBytes = diskUsage(final)
	t.LastUsed = t.CreatedAt
	return t, nil
}

// Abort removes the unfinished template.
func (p *Pending) Abort() { os.RemoveAll(p.Dir) }

// diskUsage is the space the files in dir take (sparse files count what
// they hold).
func diskUsage(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}
