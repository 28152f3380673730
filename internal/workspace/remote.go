package workspace

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/termtext"
)

// Execer runs a process in a VM; *client.Client is one. The functions
// below drive the guest scripts through it, for every front end (the CLI,
// the MCP server).
type Execer interface {
	Exec(ctx context.Context, ref string, req api.ExecRequest, stdio client.ExecIO) (api.ExitStatus, error)
}

// maxGuestStderr bounds what of a guest script's standard error is kept
// for an error message.
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
	var stderr bytes.Buffer
	st, err := c.Exec(ctx, ref, api.ExecRequest{Argv: []string{"/bin/sh", "-c", GuestPrepareScript(guestPath, branch)}, Dir: "/"},
		client.ExecIO{Stdin: pr, Stdout: io.Discard, Stderr: &CapWriter{W: &stderr, Max: maxGuestStderr}})
	pr.Close()
	if err != nil {
		return fmt.Errorf("ship %s: %w", m.Repo.Root, err)
	}
	if st.Code != 0 || st.Signal != 0 {
		return fmt.Errorf("ship %s into vm %s failed (guest exit %d): %s", m.Repo.Root, ref, st.Code, termtext.Escape(string(bytes.TrimSpace(stderr.Bytes()))))
	}
	return nil
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
	var stderr bytes.Buffer
	st, err := c.Exec(ctx, ref, api.ExecRequest{Argv: []string{"/bin/sh", "-c", GuestExportScript(guestPath, baseCommit)}, Dir: "/"},
		client.ExecIO{Stdout: out, Stderr: &CapWriter{W: &stderr, Max: maxGuestStderr}})
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
		return "", fmt.Errorf("export from vm %s failed (guest exit %d): %s", ref, st.Code, termtext.Escape(string(bytes.TrimSpace(stderr.Bytes()))))
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
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
