// Package catalog is the list of images and kernels banger can get by name
// alone, embedded in the binary. Every entry is obtainable with nothing but
// the host's own Debian/Ubuntu package mirror, so a fresh machine needs no
// hosted service of ours.
//
// Kinds: "apt" (a kernel package fetched with apt-get download, whose
// integrity apt checks against its signed indexes), "debootstrap" (a Debian
// image built locally, with mmdebstrap and no privilege), and "oci" (a reference; SHA256, when set, pins the
// manifest digest and Size its byte size).
package catalog

import (
	_ "embed"
	"encoding/json"
	"sort"
	"strings"

	"github.com/bangervm/banger/api"
)

// Entry is one catalog item.
type Entry struct {
	Name        string          `json:"name"`
	Kind        string          `json:"kind"`
	Source      string          `json:"source"`
	SHA256      string          `json:"sha256,omitempty"`
	Size        int64           `json:"size,omitempty"`
	Packages    []string        `json:"packages,omitempty"`
	Description string          `json:"description"`
	Config      api.ImageConfig `json:"config"`
}

//go:embed catalog.json
var raw []byte

var cat struct {
	Kernels []Entry `json:"kernels"`
	Images  []Entry `json:"images"`
}

func init() {
	if err := json.Unmarshal(raw, &cat); err != nil {
		panic("catalog.json: " + err.Error())
	}
}

func find(es []Entry, name string) (Entry, bool) {
	for _, e := range es {
		if e.Name == name {
			return e, true
		}
	}
	return Entry{}, false
}

// Image returns the image entry called name.
func Image(name string) (Entry, bool) { return find(cat.Images, name) }

// Kernel returns the kernel entry called name.
func Kernel(name string) (Entry, bool) { return find(cat.Kernels, name) }

// NamesRegistry reports whether ref names its registry (a host with a dot
// or a port, or localhost): how an OCI reference is told from a mistyped
// catalog name, which a bare Docker Hub name would be taken for.
func NamesRegistry(ref string) bool {
	host, _, ok := strings.Cut(ref, "/")
	return ok && (strings.ContainsAny(host, ".:") || host == "localhost")
}

// Images returns every image entry.
func Images() []Entry { return cat.Images }

// Kernels returns every kernel entry.
func Kernels() []Entry { return cat.Kernels }

// ImageNames lists the names of image entries, sorted.
func ImageNames() []string { return namesOf(cat.Images) }

// KernelNames lists the names of kernel entries, sorted.
func KernelNames() []string { return namesOf(cat.Kernels) }

func namesOf(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name)
	}
	sort.Strings(out)
	return out
}
