package workspace

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/termtext"
)

// Execer runs a process in a VM; *client.Client is one. The functions
// below drive the guest scripts through it, for every front end (the CLI,
// the MCP server).
type Execer interface {
	Exec(ctx context.Context, ref string, req api.ExecRequest, stdio client.ExecIO) (api.ExitStatus, error)
}

// maxGuestStderr bounds what of a guest script's standard error is kept
// (its end) for an error message.
const maxGuestStderr = 8 << 10

// Ship streams m into VM ref as a checkout at guestPath on branch,
// running GuestPrepareScript there. sent, when set, is told how many bytes
// of the stream have gone, at most once per 8 MiB. It does not record the
// workspace in the VM (client.SetVMWorkspace does).
func Ship(ctx context.Context, c Execer, ref string, m Manifest, guestPath, branch string, sent func(n int64)) error {
	pr, pw := io.Pipe()
	var w io.Writer = pw
	if sent != nil {
		w = &countWriter{w: pw, report: sent}
	}
	go func() { pw.CloseWithError(Pack(ctx, m, w)) }()
	stderr := &tailWriter{max: maxGuestStderr}
	st, err := c.Exec(ctx, ref, api.ExecRequest{Argv: []string{"/bin/sh", "-c", GuestPrepareScript(guestPath, branch)}, Dir: "/"},
		client.ExecIO{Stdin: pr, Stdout: io.Discard, Stderr: stderr})
	pr.Close()
	op := fmt.Sprintf("ship %s into vm %s", m.Repo.Root, ref)
	if err != nil {
		if errdefs.IsNotFound(err) && strings.Contains(err.Error(), "/bin/sh") {
			// The agent names the program it could not start.
			return &GuestError{Op: op, Code: 127, Missing: []string{"sh"}, Stderr: termtext.Escape(err.Error())}
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	if st.Code != 0 || st.Signal != 0 {
		return guestError(op, st, stderr.Bytes())
	}
	return nil
}

// GuestError is a guest script's failure (Ship's, FetchPatch's): how it
// ended and the end of what it wrote to standard error. Missing names the
// programs the guest lacks when that is why: the script checks for what
// it needs first and exits 127 naming them, as a shell does for a command
// it cannot find.
type GuestError struct {
	Op      string // what failed, with the repository and VM
	Code    int    // the script's exit status
	Signal  int    // the signal that ended it, if one did
	Missing []string
	// Stderr is the tail of the script's standard error, at most
	// maxStderrTail bytes from a line start, escaped for a terminal.
	Stderr string
}

func (e *GuestError) Error() string {
	if len(e.Missing) > 0 {
		return fmt.Sprintf("%s: the guest has no %s (a workspace needs %s in the image)", e.Op, strings.Join(e.Missing, ", "), strings.Join(GuestTools, ", "))
	}
	how := fmt.Sprintf("exit %d", e.Code)
	if e.Signal != 0 {
		how = fmt.Sprintf("signal %d", e.Signal)
	}
	if e.Stderr == "" {
		return fmt.Sprintf("%s failed (guest %s), with nothing on standard error", e.Op, how)
	}
	return fmt.Sprintf("%s failed (guest %s):\n%s", e.Op, how, e.Stderr)
}

// maxStderrTail bounds the guest's standard error a GuestError quotes;
// maxMissing the programs it names.
const (
	maxStderrTail = 2 << 10
	maxMissing    = 8
)

// guestError describes a script's failure from its status and standard
// error (from the guest: bounded, checked and escaped here).
func guestError(op string, st api.ExitStatus, stderr []byte) *GuestError {
	e := &GuestError{Op: op, Code: st.Code, Signal: st.Signal, Stderr: termtext.Escape(tail(stderr, maxStderrTail))}
	if st.Code == 127 && st.Signal == 0 {
		e.Missing = missingTools(stderr)
	}
	return e
}

// tail is the last at most max bytes of b, trimmed, from a line start
// when one is in them.
func tail(b []byte, max int) string {
	b = bytes.TrimSpace(b)
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 && i < len(b)-1 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// toolRE is a program name the guest may report as missing.
var toolRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$`)

// missingTools finds the programs a script that exited 127 reported
// missing: the scripts' own "missing in the guest: NAME..." line, or a
// shell's "NAME: not found" (dash, busybox) or "NAME: command not found"
// (bash). Names are checked and at most maxMissing kept.
func missingTools(stderr []byte) []string {
	var names []string
	add := func(n string) {
		if toolRE.MatchString(n) && len(names) < maxMissing && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, line := range strings.Split(string(stderr), "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, missingPrefix); ok {
			for _, n := range strings.Fields(rest) {
				add(n)
			}
			continue
		}
		for _, suffix := range []string{": command not found", ": not found"} {
			if rest, ok := strings.CutSuffix(line, suffix); ok {
				f := strings.Split(rest, ": ")
				add(strings.TrimSpace(f[len(f)-1]))
				break
			}
		}
	}
	return names
}

// FetchPatch writes to patch the guest's changes in the workspace at
// guestPath since it was shipped (or since baseCommit), at most
// MaxPatchSize bytes (beyond, ErrPatchTooLarge), and returns the tree the
// export script reported, for MarkExported. The bytes come from the
// guest: check them with CheckPatch before anything uses them.
func FetchPatch(ctx context.Context, c Execer, ref, guestPath, baseCommit string, patch io.Writer) (tree string, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := &CapWriter{W: patch, Max: MaxPatchSize, Over: cancel}
	// Its end: the script's last line names the tree it exported.
	stderr := &tailWriter{max: maxGuestStderr}
	st, err := c.Exec(ctx, ref, api.ExecRequest{Argv: []string{"/bin/sh", "-c", GuestExportScript(guestPath, baseCommit)}, Dir: "/"},
		client.ExecIO{Stdout: out, Stderr: stderr})
	if out.Exceeded {
		return "", fmt.Errorf("export from vm %s: %w; commit in the guest and fetch with git instead", ref, ErrPatchTooLarge)
	}
	if err != nil {
		return "", err
	}
	if out.Err != nil {
		return "", fmt.Errorf("export from vm %s: %w", ref, out.Err)
	}
	if st.Code != 0 || st.Signal != 0 {
		return "", guestError("export from vm "+ref, st, stderr.Bytes())
	}
	lines := strings.Split(strings.TrimSpace(string(stderr.Bytes())), "\n")
	tree, _ = strings.CutPrefix(lines[len(lines)-1], ExportedTreeMarker+" ")
	if tree == lines[len(lines)-1] {
		tree = ""
	}
	return tree, nil
}

// MarkExported records in the workspace at guestPath that tree (from
// FetchPatch) is on the host now. Best effort: without the record, a
// front end keeps the VM for changes it thinks unexported.
func MarkExported(ctx context.Context, c Execer, ref, guestPath, tree string) {
	if tree == "" {
		return
	}
	script, err := GuestMarkExportedScript(guestPath, tree)
	if err != nil {
		return
	}
	c.Exec(ctx, ref, api.ExecRequest{Argv: []string{"/bin/sh", "-c", script}, Dir: "/"}, client.ExecIO{Stdout: io.Discard, Stderr: io.Discard})
}

// UnexportedChanges reports whether the workspace at guestPath has
// changes that were neither shipped nor exported (GuestChangesScript). It
// errs on the side of keeping: any failure, or an answer other than
// "clean", counts as changes. (The answer comes from the guest: a hostile
// one can only get its own VM deleted or kept.)
func UnexportedChanges(ctx context.Context, c Execer, ref, guestPath string) bool {
	var out bytes.Buffer
	st, err := c.Exec(ctx, ref, api.ExecRequest{Argv: []string{"/bin/sh", "-c", GuestChangesScript(guestPath)}, Dir: "/"},
		client.ExecIO{Stdout: &CapWriter{W: &out, Max: 64}, Stderr: io.Discard})
	return err != nil || st.Code != 0 || strings.TrimSpace(out.String()) != "clean"
}

// CapWriter passes at most Max bytes on to W; at the first byte over, it
// sets Exceeded and calls Over (if set) once, and drops the rest. Write
// never fails, so that a stream into it keeps draining; the first error
// of W is kept in Err.
type CapWriter struct {
	W        io.Writer
	Max      int64
	Over     func()
	Exceeded bool
	Err      error
	n        int64
}

func (c *CapWriter) Write(p []byte) (int, error) {
	n := len(p)
	room := c.Max - c.n
	if int64(len(p)) > room {
		if !c.Exceeded && c.Over != nil {
			c.Over()
		}
		c.Exceeded = true
		p = p[:max(room, 0)]
	}
	c.n += int64(len(p))
	if c.Err == nil && len(p) > 0 {
		_, c.Err = c.W.Write(p)
	}
	return n, nil
}

// tailWriter keeps the last max bytes written to it, in at most twice
// that much memory. Write never fails.
type tailWriter struct {
	max int
	b   []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > w.max {
		p = p[len(p)-w.max:]
	}
	if len(w.b)+len(p) > 2*w.max {
		w.b = append(w.b[:0], w.b[len(w.b)-(w.max-len(p)):]...)
	}
	w.b = append(w.b, p...)
	return n, nil
}

// Bytes is the end of what was written, at most max bytes.
func (w *tailWriter) Bytes() []byte {
	if len(w.b) > w.max {
		return w.b[len(w.b)-w.max:]
	}
	return w.b
}

// countWriter reports how much has passed through it, at most once per
// 8 MiB.
type countWriter struct {
	w      io.Writer
	n      int64
	last   int64
	report func(int64)
}

func (s *countWriter) Write(b []byte) (int, error) {
	n, err := s.w.Write(b)
	s.n += int64(n)
	if s.n-s.last >= 8<<20 {
		s.last = s.n
		s.report(s.n)
	}
	return n, err
}
