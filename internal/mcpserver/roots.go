package mcpserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/bangervm/banger/errdefs"
)

// Roots are the host directories an agent may reach, resolved (absolute,
// symbolic links followed) when the server starts.
type Roots struct{ dirs []string }

// NewRoots resolves each directory, which must exist.
func NewRoots(dirs []string) (*Roots, error) {
	r := &Roots{}
	for _, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, fmt.Errorf("--repo %s: %w", d, err)
		}
		real, err := filepath.EvalSymlinks(abs)
		if err != nil {
			return nil, fmt.Errorf("--repo %s: %w", d, err)
		}
		if fi, err := os.Stat(real); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("--repo %s: not a directory: %w", d, errdefs.ErrInvalidArgument)
		}
		r.dirs = append(r.dirs, real)
	}
	return r, nil
}

// Resolve returns the real path of p, which must lie inside one of the
// roots once symbolic links are resolved. A relative p is taken from the
// first root. Any ".." element is refused outright, whatever it would
// resolve to. p need not exist, but its parent must (a new file's name
// is checked, not followed: it cannot be a link yet).
func (r *Roots) Resolve(p string) (string, error) {
	if len(r.dirs) == 0 {
		return "", fmt.Errorf("host path %q: this server was started without --repo, so no host path is reachable: %w", p, errdefs.ErrPermissionDenied)
	}
	if p == "" {
		return "", fmt.Errorf("empty host path: %w", errdefs.ErrInvalidArgument)
	}
	for _, el := range strings.Split(filepath.ToSlash(p), "/") {
		if el == ".." {
			return "", fmt.Errorf("host path %q: \"..\" is not allowed: %w", p, errdefs.ErrPermissionDenied)
		}
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(r.dirs[0], p)
	}
	p = filepath.Clean(p)
	real, err := filepath.EvalSymlinks(p)
	if errors.Is(err, os.ErrNotExist) {
		parent, perr := filepath.EvalSymlinks(filepath.Dir(p))
		if perr != nil {
			return "", fmt.Errorf("host path %q: its directory does not exist: %w", p, errdefs.ErrNotFound)
		}
		real, err = filepath.Join(parent, filepath.Base(p)), nil
	}
	if err != nil {
		return "", fmt.Errorf("host path %q: %w", p, err)
	}
	if r.Contains(real) {
		return real, nil
	}
	return "", fmt.Errorf("host path %q is outside the directories this server may use (%s): %w", p, strings.Join(r.dirs, ", "), errdefs.ErrPermissionDenied)
}

// Contains reports whether the real path p lies inside one of the roots.
func (r *Roots) Contains(p string) bool {
	for _, d := range r.dirs {
		if p == d || strings.HasPrefix(p, d+string(filepath.Separator)) {
			return true
		}
	}
	return false
}
