package hostcmd

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// DebugfsQuote quotes s as one argument of a debugfs command line. debugfs
// splits lines with the ss library, whose only quoting is a double-quoted
// string in which "" stands for one quote character. A script is read line
// by line and debugfs cuts a line at the first CR or LF, so a string with
// either (or a NUL) cannot be expressed and is refused.
func DebugfsQuote(s string) (string, error) {
	if strings.ContainsAny(s, "\n\r\x00") {
		return "", fmt.Errorf("debugfs cannot express %q: it contains a newline, carriage return or NUL", s)
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`, nil
}

// DebugfsScript runs every command of script, one per line, against the
// image in a single debugfs session, opened read-write when write is set.
//
// debugfs exits 0 even when commands fail; it reports them on standard
// error. So that a failed command is not mistaken for success, standard
// error goes to a file (through sh, since Run keeps standard error only on
// failure) and any line in it other than debugfs's version banner is
// returned as an error.
func DebugfsScript(ctx context.Context, image string, write bool, script string) error {
	if strings.HasPrefix(image, "-") {
		return fmt.Errorf("debugfs: image path %q starts with \"-\"", image)
	}
	errFile, err := os.CreateTemp("", "banger-debugfs-*.err")
	if err != nil {
		return fmt.Errorf("debugfs %s: %w", image, err)
	}
	errPath := errFile.Name()
	errFile.Close()
	defer os.Remove(errPath)

	args := []string{"-c", `exec debugfs "$@" 2>"$DEBUGFS_ERR"`, "debugfs"}
	if write {
		args = append(args, "-w")
	}
	args = append(args, "-f", "-", image)
	if _, err := Run(ctx, Cmd{
		Name:    "sh",
		Args:    args,
		Env:     []string{"DEBUGFS_ERR=" + errPath},
		Stdin:   strings.NewReader(script),
		Package: "e2fsprogs",
	}); err != nil {
		return err
	}
	out, err := os.ReadFile(errPath)
	if err != nil {
		return fmt.Errorf("debugfs %s: %w", image, err)
	}
	if msgs := debugfsErrors(string(out)); len(msgs) > 0 {
		return fmt.Errorf("debugfs %s: %s", image, tail(strings.Join(msgs, "; "), 2000))
	}
	return nil
}

// debugfsErrors returns the lines of debugfs's standard error that report
// a problem, leaving out the version banner it always prints.
func debugfsErrors(stderr string) []string {
	var msgs []string
	for _, l := range strings.Split(stderr, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || isDebugfsBanner(l) {
			continue
		}
		msgs = append(msgs, l)
	}
	return msgs
}

// isDebugfsBanner reports whether l is the "debugfs 1.47.0 (5-Feb-2023)"
// line debugfs prints on start.
func isDebugfsBanner(l string) bool {
	v, ok := strings.CutPrefix(l, "debugfs ")
	return ok && v != "" && v[0] >= '0' && v[0] <= '9'
}

// DebugfsRequest runs one read-only debugfs request (-R) against image and
// returns its standard output. A request that fails inside debugfs gives
// empty or partial output rather than an error.
func DebugfsRequest(ctx context.Context, image, request string) ([]byte, error) {
	if strings.HasPrefix(image, "-") {
		return nil, fmt.Errorf("debugfs: image path %q starts with \"-\"", image)
	}
	return Run(ctx, Cmd{Name: "debugfs", Args: []string{"-R", request, image}, Package: "e2fsprogs"})
}
