// Package hostcmd is the only place banger runs programs installed on the
// host (mke2fs, debugfs, apt-get, mmdebstrap, later ip and nft). Each tool
// has its own file with a small typed wrapper; this file holds what they
// share: running a command with a context and turning a failure into an
// error that names the tool, its arguments and what it printed.
package hostcmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
)

// ErrToolMissing marks an error caused by a host program that is not
// installed. The message names the Debian package that provides it.
var ErrToolMissing = errors.New("host tool missing")

// Cmd describes one invocation of a host program.
type Cmd struct {
	Name  string    // program name, looked up in PATH
	Args  []string  // arguments
	Dir   string    // working directory, or "" for the current one
	Env   []string  // extra environment, appended to the daemon's
	Stdin io.Reader // optional
	// Stdout, when set, receives standard output instead of the returned
	// buffer.
	Stdout io.Writer
	// Stderr, when set, also receives standard error as it is written
	// (progress lines); the error still holds its tail.
	Stderr io.Writer
	// Package is the Debian package that provides the program, named in
	// the error when it is missing.
	Package string
	// Credential, when set, runs the program as that user (the caller
	// must be root): for work root must not do on a user's behalf, such
	// as creating directories in their home, where a planted symlink
	// would redirect root.
	Credential *syscall.Credential
}

// Run runs c and returns its standard output. On failure the error holds the
// command line and the tail of standard error.
func Run(ctx context.Context, c Cmd) ([]byte, error) {
	path, err := exec.LookPath(c.Name)
	if err != nil {
		pkg := c.Package
		if pkg == "" {
			pkg = c.Name
		}
		return nil, fmt.Errorf("%s not found in PATH: install it (apt-get install %s): %w", c.Name, pkg, ErrToolMissing)
	}
	cmd := exec.CommandContext(ctx, path, c.Args...)
	cmd.Dir = c.Dir
	if len(c.Env) > 0 {
		cmd.Env = append(cmd.Environ(), c.Env...)
	}
	cmd.Stdin = c.Stdin
	if c.Credential != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.Credential}
	}
	var stdout, stderr bytes.Buffer
	if c.Stdout != nil {
		cmd.Stdout = c.Stdout
	} else {
		cmd.Stdout = &stdout
	}
	cmd.Stderr = &stderr
	if c.Stderr != nil {
		cmd.Stderr = io.MultiWriter(&stderr, c.Stderr)
	}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", c.Name, ctx.Err())
		}
		return nil, fmt.Errorf("%s %s: %w: %s", c.Name, strings.Join(c.Args, " "), err, tail(stderr.String(), 2000))
	}
	return stdout.Bytes(), nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}
