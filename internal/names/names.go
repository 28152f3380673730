// Package names validates the names users give to images, kernels and
// (later) VMs. Names are DNS-label-like so they work as hostnames and file
// names, and they always match exactly: an earlier tool looked names up by
// prefix and mixed up "beta" with "beta-sandbox".
package names

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/bangervm/banger/errdefs"
)

var valid = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)

// Validate checks name for a thing of the given kind ("image", "kernel").
func Validate(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%s name is empty: give one with --name: %w", kind, errdefs.ErrInvalidArgument)
	}
	if !valid.MatchString(name) {
		return fmt.Errorf("%s name %q: use 1-63 lowercase letters, digits, '.', '-' or '_', starting and ending with a letter or digit: %w", kind, name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// Sanitize turns free text (the last part of an image reference, a file
// name) into a valid name, or "" when nothing usable is left.
func Sanitize(s string) string {
	s = strings.ToLower(s)
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	out := strings.Trim(b.String(), "._-")
	if len(out) > 63 {
		out = strings.TrimRight(out[:63], "._-")
	}
	return out
}
