package api

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/bangervm/banger/errdefs"
)

// Label limits, as Kubernetes labels: a key is an optional DNS-subdomain
// prefix and a slash, then a name of at most 63 characters; a value is at
// most 63 characters, possibly empty. The count is bounded so a record
// and a list stay small.
const (
	MaxLabels         = 32
	maxLabelName      = 63
	maxLabelPrefix    = 253
	maxLabelValue     = 63
	labelNameChars    = `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`
	labelPrefixSyntax = `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`
)

var (
	labelNameRE   = regexp.MustCompile(`^` + labelNameChars + `$`)
	labelPrefixRE = regexp.MustCompile(`^` + labelPrefixSyntax + `$`)
)

// ValidateLabel checks one key and value.
func ValidateLabel(k, v string) error {
	name := k
	if i := strings.LastIndexByte(k, '/'); i >= 0 {
		prefix := k[:i]
		name = k[i+1:]
		if prefix == "" || len(prefix) > maxLabelPrefix || !labelPrefixRE.MatchString(prefix) {
			return fmt.Errorf("label key %q: the prefix before / must be a DNS subdomain (lower-case letters, digits, - and .), at most %d characters: %w", k, maxLabelPrefix, errdefs.ErrInvalidArgument)
		}
	}
	if len(name) == 0 || len(name) > maxLabelName || !labelNameRE.MatchString(name) {
		return fmt.Errorf("label key %q: want at most %d letters, digits, -, _ or ., beginning and ending with a letter or digit (optionally after a prefix/): %w", k, maxLabelName, errdefs.ErrInvalidArgument)
	}
	if len(v) > maxLabelValue || (v != "" && !labelNameRE.MatchString(v)) {
		return fmt.Errorf("label %s value %q: want at most %d letters, digits, -, _ or ., beginning and ending with a letter or digit: %w", k, v, maxLabelValue, errdefs.ErrInvalidArgument)
	}
	return nil
}

// ValidateLabels checks every label and their count.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%d labels: at most %d are allowed: %w", len(labels), MaxLabels, errdefs.ErrInvalidArgument)
	}
	for _, k := range SortedKeys(labels) {
		if err := ValidateLabel(k, labels[k]); err != nil {
			return err
		}
	}
	return nil
}

// ParseLabel splits "key=value" and validates it.
func ParseLabel(s string) (k, v string, err error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("label %q: want key=value: %w", s, errdefs.ErrInvalidArgument)
	}
	return k, v, ValidateLabel(k, v)
}

// ParseLabels parses repeated "key=value" arguments into a map; a key
// given twice is an error rather than a silent overwrite.
func ParseLabels(args []string) (map[string]string, error) {
	if len(args) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(args))
	for _, a := range args {
		k, v, err := ParseLabel(a)
		if err != nil {
			return nil, err
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("label %q given twice: %w", k, errdefs.ErrInvalidArgument)
		}
		out[k] = v
	}
	return out, ValidateLabels(out)
}

// MatchLabels reports whether have carries every label of want (AND).
func MatchLabels(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// FormatLabels renders labels as sorted key=value pairs joined by commas.
func FormatLabels(labels map[string]string) string {
	var parts []string
	for _, k := range SortedKeys(labels) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

// SortedKeys returns a map's keys in order.
func SortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
