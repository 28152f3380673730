package api

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// ParseNodeSelector reads --node-selector (banger-controller's, banger
// cluster install's): k=v pairs separated by commas, each a valid label
// key and value; empty is none.
func ParseNodeSelector(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	sel := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return nil, fmt.Errorf("node selector %q: want key=value[,key=value]", kv)
		}
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, fmt.Errorf("node selector key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, fmt.Errorf("node selector value %q: %s", v, strings.Join(errs, "; "))
		}
		if _, dup := sel[k]; dup {
			return nil, fmt.Errorf("node selector: key %q given twice", k)
		}
		sel[k] = v
	}
	return sel, nil
}

// ParseAccel checks --accel (banger-controller's, banger cluster
// install's).
func ParseAccel(s string) (string, error) {
	for _, a := range AccelModes {
		if s == a {
			return s, nil
		}
	}
	return "", fmt.Errorf("accel %q: want one of %s", s, strings.Join(AccelModes, ", "))
}
