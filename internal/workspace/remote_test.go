package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/hostcmd"
)

// hostGuest is an Execer running the guest's argv on this machine with
// PATH set to path: a guest whose image has only the programs in path.
type hostGuest struct{ path string }

func (g hostGuest) Exec(ctx context.Context, ref string, req api.ExecRequest, stdio client.ExecIO) (api.ExitStatus, error) {
	_, err := hostcmd.Run(ctx, hostcmd.Cmd{Name: req.Argv[0], Args: req.Argv[1:], Dir: req.Dir, Env: []string{"PATH=" + g.path},
		Stdin: stdio.Stdin, Stdout: stdio.Stdout, Stderr: stdio.Stderr})
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return api.ExitStatus{Code: ee.ExitCode()}, nil
	}
	return api.ExitStatus{}, err
}

// binDir is a directory of links to this machine's programs named, as
// the PATH of a guest that has only those.
func binDir(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// hostManifest plans the shipping of makeHostRepo's repository.
func hostManifest(t *testing.T) Manifest {
	t.Helper()
	setupEnv(t)
	ctx := context.Background()
	repo, err := Inspect(ctx, makeHostRepo(t))
	if err == nil {
		var m Manifest
		if m, err = Plan(ctx, repo, Options{}); err == nil {
			return m
		}
	}
	t.Fatal(err)
	return Manifest{}
}

// Ship's failures say which: a guest lacking programs names them (all of
// them, from the script's own check), any other failure quotes the end of
// the guest's standard error.
func TestShipGuestError(t *testing.T) {
	ctx := context.Background()
	m := hostManifest(t)

	// No git, no tar.
	var have []string
	for _, n := range GuestTools[1:] {
		if n != "git" && n != "tar" {
			have = append(have, n)
		}
	}
	err := Ship(ctx, hostGuest{binDir(t, have...)}, "box", m, filepath.Join(t.TempDir(), "repo"), "main", nil)
	var ge *GuestError
	if !errors.As(err, &ge) || ge.Code != 127 || !slices.Equal(ge.Missing, []string{"git", "tar"}) ||
		!strings.Contains(err.Error(), "into vm box: the guest has no git, tar (a workspace needs sh, git, tar") {
		t.Errorf("ship to a guest without git and tar: %v (%#v); want a GuestError naming git and tar", err, ge)
	}

	// No /bin/sh at all: the agent cannot start the script.
	ge = nil
	err = Ship(ctx, noShell{}, "box", m, "/root/repo", "main", nil)
	if !errors.As(err, &ge) || !slices.Equal(ge.Missing, []string{"sh"}) {
		t.Errorf("ship to a guest without sh: %v; want a GuestError naming sh", err)
	}

	// Everything there, but the destination is taken: not a missing
	// program, and the guest's reason is shown.
	dest := t.TempDir()
	write(t, dest, "keep", []byte("x"), 0o644)
	ge = nil
	err = Ship(ctx, hostGuest{binDir(t, GuestTools[1:]...)}, "box", m, dest, "main", nil)
	if !errors.As(err, &ge) || ge.Code != 1 || len(ge.Missing) != 0 || !strings.Contains(err.Error(), "guest exit 1):\nbanger workspace: "+dest+" already exists and is not empty") ||
		strings.Contains(err.Error(), "has no") {
		t.Errorf("ship into a non-empty directory: %v; want the guest's reason, no missing program", err)
	}
}

// noShell is a guest whose image has no /bin/sh: the agent's answer.
type noShell struct{}

func (noShell) Exec(ctx context.Context, ref string, req api.ExecRequest, stdio client.ExecIO) (api.ExitStatus, error) {
	return api.ExitStatus{}, fmt.Errorf("exec: stat %s: no such file or directory: %w", req.Argv[0], errdefs.ErrNotFound)
}

func TestGuestErrorFromStatus(t *testing.T) {
	long := strings.Repeat("warning: noise\n", 1000) + "fatal: the real reason\n"
	for _, tc := range []struct {
		name    string
		st      api.ExitStatus
		stderr  string
		missing []string
		has     []string
		hasNot  []string
	}{
		{"own check", api.ExitStatus{Code: 127}, missingPrefix + " git tar\n", []string{"git", "tar"}, []string{"the guest has no git, tar"}, nil},
		{"dash", api.ExitStatus{Code: 127}, "sh: 1: tar: not found\n", []string{"tar"}, []string{"has no tar"}, nil},
		{"busybox", api.ExitStatus{Code: 127}, "/bin/sh: git: not found\n", []string{"git"}, []string{"has no git"}, nil},
		{"bash", api.ExitStatus{Code: 127}, "bash: line 3: sed: command not found\n", []string{"sed"}, []string{"has no sed"}, nil},
		{"not found but not 127", api.ExitStatus{Code: 1}, "sh: 1: tar: not found\n", nil, []string{"guest exit 1):\nsh: 1: tar: not found"}, []string{"has no"}},
		{"hostile names dropped", api.ExitStatus{Code: 127}, missingPrefix + " ../x \x1b[2J " + strings.Repeat("a", 100) + " ok\n" + "$(rm): not found\n", []string{"ok"}, nil, []string{"\x1b"}},
		{"killed", api.ExitStatus{Code: 137, Signal: 9}, "", nil, []string{"guest signal 9), with nothing on standard error"}, nil},
		{"tail bounded", api.ExitStatus{Code: 128}, long, nil, []string{"fatal: the real reason"}, nil},
		{"escaped", api.ExitStatus{Code: 1}, "bad \x1b]0;title\x07\n", nil, []string{`\x1b`}, []string{"\x1b"}},
	} {
		e := guestError("ship /r into vm box", tc.st, []byte(tc.stderr))
		msg := e.Error()
		if !slices.Equal(e.Missing, tc.missing) {
			t.Errorf("%s: missing %q, want %q", tc.name, e.Missing, tc.missing)
		}
		for _, s := range tc.has {
			if !strings.Contains(msg, s) {
				t.Errorf("%s: %q lacks %q", tc.name, msg, s)
			}
		}
		for _, s := range tc.hasNot {
			if strings.Contains(msg, s) {
				t.Errorf("%s: %q has %q", tc.name, msg, s)
			}
		}
		if len(e.Stderr) > 4*maxStderrTail {
			t.Errorf("%s: %d bytes of stderr quoted, want at most %d (escaped)", tc.name, len(e.Stderr), 4*maxStderrTail)
		}
	}
}

func TestTailWriter(t *testing.T) {
	w := &tailWriter{max: 10}
	var all bytes.Buffer
	for i := range 100 {
		s := fmt.Sprintf("%d,", i)
		w.Write([]byte(s))
		all.WriteString(s)
		if cap(w.b) > 64 {
			t.Fatalf("after %d writes: %d bytes held", i+1, cap(w.b))
		}
	}
	w.Write(bytes.Repeat([]byte("y"), 25))
	all.Write(bytes.Repeat([]byte("y"), 25))
	w.Write([]byte("end"))
	all.WriteString("end")
	if got, want := string(w.Bytes()), all.String()[all.Len()-10:]; got != want {
		t.Errorf("tail %q, want %q", got, want)
	}
}
