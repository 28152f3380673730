package hostcmd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/bangervm/banger/errdefs"
)

// aptPackage is the Debian package providing apt-get and apt-cache.
const aptPackage = "apt"

// debPackageName is Debian policy's package name syntax. Checking it keeps
// a name from being taken as an option.
var debPackageName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

func checkPackageName(pkg string) error {
	if !debPackageName.MatchString(pkg) {
		return fmt.Errorf("invalid Debian package name %q: %w", pkg, errdefs.ErrInvalidArgument)
	}
	return nil
}

// AptRecord is one version of a package as apt-cache show prints it.
type AptRecord struct {
	Package      string
	Version      string
	Architecture string
	Depends      string
	Filename     string
	SHA256       string
}

// AptCacheShow runs apt-cache show for pkg and returns one record per
// available version, in apt's order. An unknown package is ErrNotFound.
func AptCacheShow(ctx context.Context, pkg string) ([]AptRecord, error) {
	if err := checkPackageName(pkg); err != nil {
		return nil, err
	}
	out, err := Run(ctx, Cmd{Name: "apt-cache", Args: []string{"show", "--", pkg}, Package: aptPackage})
	if err != nil {
		return nil, aptNotFound(pkg, err)
	}
	var recs []AptRecord
	var cur AptRecord
	flush := func() {
		if cur.Package != "" {
			recs = append(recs, cur)
		}
		cur = AptRecord{}
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			flush()
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			continue // continuation of a multi-line field
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "Package":
			cur.Package = v
		case "Version":
			cur.Version = v
		case "Architecture":
			cur.Architecture = v
		case "Depends":
			cur.Depends = v
		case "Filename":
			cur.Filename = v
		case "SHA256":
			cur.SHA256 = v
		}
	}
	flush()
	if len(recs) == 0 {
		return nil, fmt.Errorf("apt-cache show %s: no records: %w", pkg, errdefs.ErrNotFound)
	}
	return recs, nil
}

// AptCacheDepends returns the packages that the candidate version of pkg
// depends on (Depends and PreDepends, alternatives included, virtual
// packages left out), as apt-cache depends lists them.
func AptCacheDepends(ctx context.Context, pkg string) ([]string, error) {
	if err := checkPackageName(pkg); err != nil {
		return nil, err
	}
	out, err := Run(ctx, Cmd{
		Name:    "apt-cache",
		Args:    []string{"depends", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances", "--", pkg},
		Package: aptPackage,
	})
	if err != nil {
		return nil, aptNotFound(pkg, err)
	}
	return parseAptDepends(out), nil
}

func parseAptDepends(out []byte) []string {
	var deps []string
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimLeft(strings.TrimSpace(line), "|")
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "Depends" && k != "PreDepends") {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" || strings.HasPrefix(v, "<") {
			continue
		}
		deps = append(deps, v)
	}
	return deps
}

// AptGetDownload runs apt-get download for pkg in dir: it fetches the
// candidate version's .deb into dir from the configured mirrors, and works
// without root.
func AptGetDownload(ctx context.Context, dir, pkg string) error {
	if err := checkPackageName(pkg); err != nil {
		return err
	}
	_, err := Run(ctx, Cmd{Name: "apt-get", Args: []string{"download", "-q", "--", pkg}, Dir: dir, Package: aptPackage})
	return aptNotFound(pkg, err)
}

// aptNotFound marks apt's "unknown package" failures as ErrNotFound.
func aptNotFound(pkg string, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if strings.Contains(msg, "No packages found") || strings.Contains(msg, "Unable to locate package") ||
		strings.Contains(msg, "has no installation candidate") {
		return fmt.Errorf("package %s: %w: %w", pkg, errdefs.ErrNotFound, err)
	}
	return err
}
