package hostcmd

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
)

// Ldd returns the absolute paths of the shared libraries the dynamic
// program at path loads, its dynamic loader included, as ldd resolves them
// on this machine. A library ldd cannot find is an error.
func Ldd(ctx context.Context, path string) ([]string, error) {
	if strings.HasPrefix(path, "-") {
		return nil, fmt.Errorf("ldd: path %q starts with \"-\"", path)
	}
	out, err := Run(ctx, Cmd{Name: "ldd", Args: []string{path}, Package: "libc-bin"})
	if err != nil {
		return nil, err
	}
	return parseLdd(path, string(out))
}

// parseLdd reads ldd's lines: "name => /path (addr)", "/path (addr)" for
// the loader, "linux-vdso.so.1 (addr)" for the kernel's (no file), and
// "name => not found".
func parseLdd(prog, out string) ([]string, error) {
	var libs []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case len(f) >= 3 && f[1] == "=>" && f[2] == "not":
			return nil, fmt.Errorf("ldd %s: %s not found", prog, f[0])
		case len(f) >= 3 && f[1] == "=>" && filepath.IsAbs(f[2]):
			libs = append(libs, f[2])
		case filepath.IsAbs(f[0]):
			libs = append(libs, f[0])
		}
	}
	return libs, nil
}
