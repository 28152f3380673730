package mcpserver

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/atomicfile"
	"github.com/bangervm/banger/internal/config"
	"github.com/bangervm/banger/internal/untar"
	"github.com/bangervm/banger/internal/workspace"
)

// Bounds on what a tool returns to the model: guest output is cut (with a
// note) rather than flooding its context.
const (
	outputHead       = 16 << 10 // of each stream of run_command, kept from the start
	outputTail       = 16 << 10 // and from the end
	defaultReadBytes = 256 << 10
	maxReadBytes     = 1 << 20
	maxWriteBytes    = 16 << 20
	maxPatchReturned = 512 << 10
	defaultTimeout   = 10 * time.Minute
	maxTimeout       = time.Hour
	maxRefusalsShown = 20
	progressEvery    = 10 * time.Second
)

func (s *Server) addTools() {
	ro := &mcp.ToolAnnotations{ReadOnlyHint: true}
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "create_sandbox", Description: "Create and boot a fresh Linux sandbox (a microVM; root inside). With repo, that host git repository is copied in at /root/repo as a checkout of its HEAD plus uncommitted changes (ignored files never), and run_command starts there. Needs git in the image for repo (the default image has it). Takes seconds to a minute; reports progress. Returns the sandbox name used by every other tool."}, s.createSandbox)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "run_command", Description: "Run a shell command (/bin/sh -c) in a sandbox as root and wait for it. Returns exit_code, stdout and stderr; long output keeps its beginning and end with a note on what was cut. The command is killed after timeout_seconds (default 600). Runs in the workspace (/root/repo) unless workdir is given."}, s.runCommand)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "read_file", Description: "Read a file from a sandbox. Relative paths are from the workspace. Returns its text (at most max_bytes, default 256 KiB, with a note if cut).", Annotations: ro}, s.readFile)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "write_file", Description: "Create or replace a file in a sandbox with the given text (parent directories are made). Relative paths are from the workspace."}, s.writeFile)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "copy_in", Description: "Copy a host file or directory into a sandbox directory. The host path must be inside a repository directory the user allowed; symbolic links are kept as links."}, s.copyIn)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "copy_out", Description: "Copy a file or directory from a sandbox into a host directory inside a repository directory the user allowed. Entries that could harm the host (links escaping, devices) are refused and listed."}, s.copyOut)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "list_ports", Description: "List the TCP ports listening in a running sandbox (for a server you started there).", Annotations: ro}, s.listPorts)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "export_diff", Description: "Export everything changed in the sandbox's workspace since it was created (commits, edits, new and deleted files) as a binary git patch, checked before it is returned, that `git apply` applies to the user's checkout. Optionally also saved to a host file inside an allowed repository directory. Nothing is applied to the host by this tool.", Annotations: ro}, s.exportDiff)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "stop_sandbox", Description: "Stop a sandbox gracefully, keeping its disk (start_sandbox boots it again)."}, s.stopSandbox)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "start_sandbox", Description: "Boot a stopped sandbox again."}, s.startSandbox)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "delete_sandbox", Description: "Delete a sandbox and its disk for good (export_diff first if you want its changes).", Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true)}}, s.deleteSandbox)
	mcp.AddTool(s.mcp, &mcp.Tool{Name: "list_sandboxes", Description: "List the sandboxes this server created, with their state and when they expire.", Annotations: ro}, s.listSandboxes)
}

func ptr[T any](v T) *T { return &v }

// Sandbox is a sandbox as the tools report it.
type Sandbox struct {
	Name      string     `json:"name"`
	ID        string     `json:"id"`
	State     string     `json:"state"`
	Image     string     `json:"image"`
	IP        string     `json:"ip,omitempty" jsonschema:"address on banger's bridge, when the sandbox has a network"`
	Workspace string     `json:"workspace,omitempty" jsonschema:"guest path of the repository copied in"`
	ExpiresAt *time.Time `json:"expires_at,omitempty" jsonschema:"when the sandbox is deleted automatically"`
}

func sandbox(v api.VM) Sandbox {
	return Sandbox{Name: v.Name, ID: v.ID, State: v.State, Image: v.Image, IP: v.IP, Workspace: v.Workspace, ExpiresAt: v.ExpiresAt}
}

// progress sends MCP progress notifications for req, if the client asked
// for them (a progress token); each call counts one step.
func progress(ctx context.Context, req *mcp.CallToolRequest) func(msg string) {
	tok := req.Params.GetProgressToken()
	if tok == nil || req.Session == nil {
		return func(string) {}
	}
	n := 0
	return func(msg string) {
		n++
		req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Message: msg, Progress: float64(n)})
	}
}

// SandboxRef names the sandbox a tool acts on.
type SandboxRef struct {
	Sandbox string `json:"sandbox" jsonschema:"sandbox name (or id) as create_sandbox or list_sandboxes returned it"`
}

// CreateInput is create_sandbox's input.
type CreateInput struct {
	Name             string `json:"name,omitempty" jsonschema:"name for the sandbox (lower-case letters, digits, -); default: a generated one"`
	Image            string `json:"image,omitempty" jsonschema:"image to boot; default: the server's default image"`
	VCPU             int    `json:"vcpu,omitempty" jsonschema:"virtual CPUs; default: the host's configured default"`
	MemoryMiB        int    `json:"memory_mib,omitempty" jsonschema:"memory in MiB; default: the configured default"`
	DiskSize         string `json:"disk_size,omitempty" jsonschema:"size of the sandbox's own writable disk, e.g. 4G; default: the configured default"`
	Repo             string `json:"repo,omitempty" jsonschema:"host path of a git repository (inside a directory the user allowed) to copy in as the workspace"`
	IncludeUntracked bool   `json:"include_untracked,omitempty" jsonschema:"also copy untracked files that git does not ignore"`
	TTLSeconds       int64  `json:"ttl_seconds,omitempty" jsonschema:"delete the sandbox this many seconds after creation; default and maximum: the server's --ttl"`
}

func (s *Server) createSandbox(ctx context.Context, req *mcp.CallToolRequest, in CreateInput) (*mcp.CallToolResult, Sandbox, error) {
	ttl := s.cfg.TTL
	if in.TTLSeconds < 0 || time.Duration(in.TTLSeconds)*time.Second > s.cfg.TTL {
		return nil, Sandbox{}, fmt.Errorf("ttl_seconds %d: want 1 to %d (the server's --ttl): %w", in.TTLSeconds, int64(s.cfg.TTL/time.Second), errdefs.ErrInvalidArgument)
	}
	if in.TTLSeconds > 0 {
		ttl = time.Duration(in.TTLSeconds) * time.Second
	}
	creq := api.CreateVMRequest{Name: in.Name, Image: in.Image, VCPU: in.VCPU, MemoryMiB: in.MemoryMiB, Net: s.cfg.Net,
		Labels: s.selector(), TTLSeconds: int64(ttl / time.Second)}
	if creq.Image == "" {
		creq.Image = s.cfg.Image
	}
	if in.DiskSize != "" {
		n, err := config.ParseSize(in.DiskSize)
		if err != nil {
			return nil, Sandbox{}, fmt.Errorf("disk_size: %w", err)
		}
		creq.DiskBytes = n
	}
	var plan *workspace.Manifest
	if in.Repo != "" {
		m, err := s.planRepo(ctx, in.Repo, in.IncludeUntracked)
		if err != nil {
			return nil, Sandbox{}, err
		}
		plan = &m
	}
	release, err := s.reserve(ctx)
	if err != nil {
		return nil, Sandbox{}, err
	}
	defer release()
	report := progress(ctx, req)
	v, err := s.cfg.Client.CreateVM(ctx, creq, func(e api.Event) {
		if e.Message != "" {
			report(e.Message)
		}
	})
	if err != nil {
		return nil, Sandbox{}, err
	}
	s.cfg.Log.Info("sandbox created", "vm", v.ID, "name", v.Name, "ttl", ttl)
	if plan != nil {
		report("copying " + plan.Repo.Root + " into the sandbox")
		err := workspace.Ship(ctx, s.cfg.Client, v.ID, *plan, workspace.DefaultGuestPath, plan.Repo.Branch, func(n int64) {
			report(fmt.Sprintf("copied %d MiB", n>>20))
		})
		if err == nil {
			v, err = s.cfg.Client.SetVMWorkspace(ctx, v.ID, workspace.DefaultGuestPath)
		}
		if err != nil {
			// A sandbox without the repository asked for is half made.
			s.cfg.Client.DeleteVM(context.WithoutCancel(ctx), v.ID, true)
			var ge *workspace.GuestError
			if errors.As(err, &ge) && len(ge.Missing) > 0 {
				return nil, Sandbox{}, fmt.Errorf("%w: use an image that has them", err)
			}
			return nil, Sandbox{}, err
		}
	}
	return nil, sandbox(v), nil
}

// planRepo checks that the repository at p, as a whole, lies inside the
// roots (p inside them is not enough: its repository could be a parent)
// and lists what would be shipped.
func (s *Server) planRepo(ctx context.Context, p string, untracked bool) (workspace.Manifest, error) {
	real, err := s.roots.Resolve(p)
	if err != nil {
		return workspace.Manifest{}, err
	}
	repo, err := workspace.Inspect(ctx, real)
	if err != nil {
		return workspace.Manifest{}, err
	}
	root, err := filepath.EvalSymlinks(repo.Root)
	if err != nil || !s.roots.Contains(root) {
		return workspace.Manifest{}, fmt.Errorf("repository %s (holding %s) is not inside the directories this server may use: %w", repo.Root, p, errdefs.ErrPermissionDenied)
	}
	return workspace.Plan(ctx, repo, workspace.Options{IncludeUntracked: untracked})
}

// RunInput is run_command's input.
type RunInput struct {
	Sandbox        string   `json:"sandbox" jsonschema:"sandbox name"`
	Command        string   `json:"command" jsonschema:"shell command line, run with /bin/sh -c as root"`
	Workdir        string   `json:"workdir,omitempty" jsonschema:"directory to run in; default: the workspace, else the image's"`
	TimeoutSeconds int      `json:"timeout_seconds,omitempty" jsonschema:"kill the command after this many seconds (default 600, at most 3600)"`
	Stdin          string   `json:"stdin,omitempty" jsonschema:"text given to the command on standard input"`
	Env            []string `json:"env,omitempty" jsonschema:"extra environment variables, KEY=VALUE"`
}

// RunOutput is how a command ended and what it printed.
type RunOutput struct {
	ExitCode int    `json:"exit_code" jsonschema:"the command's exit status (128+N when killed by signal N)"`
	Signal   int    `json:"signal,omitempty" jsonschema:"the signal that killed it, if any"`
	TimedOut bool   `json:"timed_out,omitempty" jsonschema:"true when the command was killed at its timeout"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	Note     string `json:"note,omitempty" jsonschema:"what was cut from the output, if anything"`
}

func (s *Server) runCommand(ctx context.Context, req *mcp.CallToolRequest, in RunInput) (*mcp.CallToolResult, RunOutput, error) {
	v, err := s.owned(ctx, in.Sandbox)
	if err != nil {
		return nil, RunOutput{}, err
	}
	if strings.TrimSpace(in.Command) == "" {
		return nil, RunOutput{}, fmt.Errorf("command is empty: %w", errdefs.ErrInvalidArgument)
	}
	timeout := defaultTimeout
	if in.TimeoutSeconds < 0 || time.Duration(in.TimeoutSeconds)*time.Second > maxTimeout {
		return nil, RunOutput{}, fmt.Errorf("timeout_seconds %d: want 1 to %d: %w", in.TimeoutSeconds, int(maxTimeout/time.Second), errdefs.ErrInvalidArgument)
	}
	if in.TimeoutSeconds > 0 {
		timeout = time.Duration(in.TimeoutSeconds) * time.Second
	}
	dir := in.Workdir
	if dir == "" {
		dir = v.Workspace
	} else {
		dir = guestPath(v, dir)
	}
	stdout, stderr := &headTail{}, &headTail{}
	sig := make(chan int, 1)
	var timedOut atomic.Bool
	kill := time.AfterFunc(timeout, func() { timedOut.Store(true); sig <- 9 })
	defer kill.Stop()
	// Should the kill not end it (the agent gone), the connection is cut
	// a little later.
	ctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	// Tell the client the command is alive, for a build that takes minutes
	// (some clients time a call out without progress).
	report := progress(ctx, req)
	start := time.Now()
	alive := time.NewTicker(progressEvery)
	defer alive.Stop()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-alive.C:
				report(fmt.Sprintf("running for %v", now.Sub(start).Round(time.Second)))
			}
		}
	}()
	var stdin io.Reader
	if in.Stdin != "" {
		stdin = strings.NewReader(in.Stdin)
	}
	st, err := s.cfg.Client.Exec(ctx, v.ID, api.ExecRequest{Argv: []string{"/bin/sh", "-c", in.Command}, Dir: dir, Env: in.Env},
		client.ExecIO{Stdin: stdin, Stdout: stdout, Stderr: stderr, Signal: sig})
	if err != nil {
		return nil, RunOutput{}, err
	}
	out := RunOutput{ExitCode: st.Code, Signal: st.Signal, TimedOut: timedOut.Load(), Stdout: stdout.String(), Stderr: stderr.String()}
	if st.Signal != 0 && out.ExitCode == 0 {
		out.ExitCode = 128 + st.Signal
	}
	var notes []string
	for i, h := range []*headTail{stdout, stderr} {
		if h.cut > 0 {
			notes = append(notes, fmt.Sprintf("%s: %d bytes in the middle were cut (kept the first %d and last %d); redirect to a file and read_file parts of it for more", []string{"stdout", "stderr"}[i], h.cut, outputHead, outputTail))
		}
	}
	if out.TimedOut {
		notes = append(notes, fmt.Sprintf("killed after %v: raise timeout_seconds or run it in the background (nohup CMD > log 2>&1 &)", timeout))
	}
	out.Note = strings.Join(notes, "; ")
	return nil, out, nil
}

// headTail keeps the first outputHead and last outputTail bytes written
// to it and counts what it dropped between them.
type headTail struct {
	head, tail []byte
	cut        int64
}

func (h *headTail) Write(p []byte) (int, error) {
	n := len(p)
	if room := outputHead - len(h.head); room > 0 {
		k := min(room, len(p))
		h.head = append(h.head, p[:k]...)
		p = p[k:]
	}
	h.tail = append(h.tail, p...)
	if over := len(h.tail) - outputTail; over > 0 {
		h.cut += int64(over)
		h.tail = append(h.tail[:0], h.tail[over:]...)
	}
	return n, nil
}

func (h *headTail) String() string {
	if h.cut == 0 {
		return string(h.head) + string(h.tail)
	}
	return fmt.Sprintf("%s\n[... %d bytes cut ...]\n%s", h.head, h.cut, h.tail)
}

// guestPath makes p absolute, from the workspace (else /root).
func guestPath(v api.VM, p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	base := v.Workspace
	if base == "" {
		base = "/root"
	}
	return path.Join(base, p)
}

// ReadInput is read_file's input.
type ReadInput struct {
	Sandbox  string `json:"sandbox" jsonschema:"sandbox name"`
	Path     string `json:"path" jsonschema:"file path in the sandbox; relative paths are from the workspace"`
	MaxBytes int    `json:"max_bytes,omitempty" jsonschema:"return at most this many bytes (default 262144, at most 1048576)"`
}

// ReadOutput is a file's content.
type ReadOutput struct {
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	Content string `json:"content"`
	Note    string `json:"note,omitempty"`
}

func (s *Server) readFile(ctx context.Context, req *mcp.CallToolRequest, in ReadInput) (*mcp.CallToolResult, ReadOutput, error) {
	v, err := s.owned(ctx, in.Sandbox)
	if err != nil {
		return nil, ReadOutput{}, err
	}
	limit := in.MaxBytes
	if limit <= 0 {
		limit = defaultReadBytes
	}
	limit = min(limit, maxReadBytes)
	p := guestPath(v, in.Path)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rc, err := s.cfg.Client.CopyFromVM(ctx, v.ID, p)
	if err != nil {
		return nil, ReadOutput{}, fmt.Errorf("read %s in sandbox %s: %w", p, v.Name, err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	hdr, err := tr.Next()
	if err != nil {
		return nil, ReadOutput{}, fmt.Errorf("read %s in sandbox %s: %w", p, v.Name, err)
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
	case tar.TypeDir:
		return nil, ReadOutput{}, fmt.Errorf("%s is a directory: list it with run_command (ls -la %s): %w", p, p, errdefs.ErrInvalidArgument)
	case tar.TypeSymlink:
		return nil, ReadOutput{}, fmt.Errorf("%s is a symbolic link to %q: read that path: %w", p, hdr.Linkname, errdefs.ErrInvalidArgument)
	default:
		return nil, ReadOutput{}, fmt.Errorf("%s is not a regular file: %w", p, errdefs.ErrInvalidArgument)
	}
	b, err := io.ReadAll(io.LimitReader(tr, int64(limit)))
	if err != nil {
		return nil, ReadOutput{}, fmt.Errorf("read %s in sandbox %s: %w", p, v.Name, err)
	}
	out := ReadOutput{Path: p, Size: hdr.Size, Content: string(b)}
	if hdr.Size > int64(len(b)) {
		out.Note = fmt.Sprintf("only the first %d of %d bytes: use run_command (sed -n, head, tail, grep) for other parts", len(b), hdr.Size)
	}
	if bytes.IndexByte(b, 0) >= 0 {
		out.Note = strings.TrimPrefix(out.Note+"; the file looks binary (it holds NUL bytes)", "; ")
	}
	return nil, out, nil
}

// WriteInput is write_file's input.
type WriteInput struct {
	Sandbox string `json:"sandbox" jsonschema:"sandbox name"`
	Path    string `json:"path" jsonschema:"file path in the sandbox; relative paths are from the workspace"`
	Content string `json:"content" jsonschema:"the file's full new content"`
	Mode    string `json:"mode,omitempty" jsonschema:"octal permissions, e.g. 0755 for a script; default 0644"`
}

// WriteOutput says what was written.
type WriteOutput struct {
	Path  string `json:"path"`
	Bytes int    `json:"bytes"`
}

func (s *Server) writeFile(ctx context.Context, req *mcp.CallToolRequest, in WriteInput) (*mcp.CallToolResult, WriteOutput, error) {
	v, err := s.owned(ctx, in.Sandbox)
	if err != nil {
		return nil, WriteOutput{}, err
	}
	if len(in.Content) > maxWriteBytes {
		return nil, WriteOutput{}, fmt.Errorf("content is %d bytes: at most %d; use copy_in for large files: %w", len(in.Content), maxWriteBytes, errdefs.ErrInvalidArgument)
	}
	mode := int64(0o644)
	if in.Mode != "" {
		if _, err := fmt.Sscanf(in.Mode, "%o", &mode); err != nil || mode < 0 || mode > 0o777 {
			return nil, WriteOutput{}, fmt.Errorf("mode %q: want octal permissions such as 0644 or 0755: %w", in.Mode, errdefs.ErrInvalidArgument)
		}
	}
	p := guestPath(v, in.Path)
	if p == "/" {
		return nil, WriteOutput{}, fmt.Errorf("path %q: name a file: %w", in.Path, errdefs.ErrInvalidArgument)
	}
	dir := path.Dir(p)
	if err := s.mkdirGuest(ctx, v, dir); err != nil {
		return nil, WriteOutput{}, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: path.Base(p), Mode: mode, Size: int64(len(in.Content)), ModTime: time.Now()})
	tw.Write([]byte(in.Content))
	tw.Close()
	if err := s.cfg.Client.CopyToVM(ctx, v.ID, dir, &buf); err != nil {
		return nil, WriteOutput{}, fmt.Errorf("write %s in sandbox %s: %w", p, v.Name, err)
	}
	return nil, WriteOutput{Path: p, Bytes: len(in.Content)}, nil
}

// mkdirGuest makes dir and its parents in the guest.
func (s *Server) mkdirGuest(ctx context.Context, v api.VM, dir string) error {
	var stderr headTail
	st, err := s.cfg.Client.Exec(ctx, v.ID, api.ExecRequest{Argv: []string{"mkdir", "-p", "--", dir}, Dir: "/"}, client.ExecIO{Stdout: io.Discard, Stderr: &stderr})
	if err != nil {
		return err
	}
	if st.Code != 0 || st.Signal != 0 {
		return fmt.Errorf("make directory %s in sandbox %s: %s", dir, v.Name, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// CopyInInput is copy_in's input.
type CopyInInput struct {
	Sandbox  string `json:"sandbox" jsonschema:"sandbox name"`
	HostPath string `json:"host_path" jsonschema:"host file or directory, inside a repository directory the user allowed (relative paths are from the first one)"`
	GuestDir string `json:"guest_dir" jsonschema:"sandbox directory to copy into (made if missing); relative paths are from the workspace"`
}

// CopyOutput says where a copy landed.
type CopyOutput struct {
	Path string `json:"path" jsonschema:"where the copy is"`
	Note string `json:"note,omitempty"`
}

func (s *Server) copyIn(ctx context.Context, req *mcp.CallToolRequest, in CopyInInput) (*mcp.CallToolResult, CopyOutput, error) {
	v, err := s.owned(ctx, in.Sandbox)
	if err != nil {
		return nil, CopyOutput{}, err
	}
	src, err := s.roots.Resolve(in.HostPath)
	if err != nil {
		return nil, CopyOutput{}, err
	}
	if _, err := os.Lstat(src); err != nil {
		return nil, CopyOutput{}, fmt.Errorf("host path %s: %w", src, errdefs.ErrNotFound)
	}
	dir := guestPath(v, in.GuestDir)
	if err := s.mkdirGuest(ctx, v, dir); err != nil {
		return nil, CopyOutput{}, err
	}
	name := agentproto.TarName(src)
	err = agentproto.StreamTar(ctx, src, name, func(r io.Reader) error {
		if err := s.cfg.Client.CopyToVM(ctx, v.ID, dir, r); err != nil {
			return fmt.Errorf("copy %s into sandbox %s: %w", src, v.Name, err)
		}
		return nil
	})
	if err != nil {
		return nil, CopyOutput{}, err
	}
	s.cfg.Log.Info("copied into sandbox", "vm", v.ID, "host", src, "guest", dir)
	return nil, CopyOutput{Path: path.Join(dir, name)}, nil
}

// CopyOutInput is copy_out's input.
type CopyOutInput struct {
	Sandbox   string `json:"sandbox" jsonschema:"sandbox name"`
	GuestPath string `json:"guest_path" jsonschema:"file or directory in the sandbox; relative paths are from the workspace"`
	HostDir   string `json:"host_dir" jsonschema:"existing host directory, inside a repository directory the user allowed, to copy into"`
}

func (s *Server) copyOut(ctx context.Context, req *mcp.CallToolRequest, in CopyOutInput) (*mcp.CallToolResult, CopyOutput, error) {
	v, err := s.owned(ctx, in.Sandbox)
	if err != nil {
		return nil, CopyOutput{}, err
	}
	dir, err := s.roots.Resolve(in.HostDir)
	if err != nil {
		return nil, CopyOutput{}, err
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, CopyOutput{}, fmt.Errorf("host directory %s does not exist: %w", dir, errdefs.ErrNotFound)
	}
	src := guestPath(v, in.GuestPath)
	var refused []string
	n := 0
	opts := untar.Options{Policy: untar.Strict, Top: agentproto.TarName(src), Refused: func(r untar.Refusal) {
		n++
		if len(refused) < maxRefusalsShown {
			refused = append(refused, r.String())
		}
	}}
	rc, err := s.cfg.Client.CopyFromVM(ctx, v.ID, src)
	if err != nil {
		return nil, CopyOutput{}, fmt.Errorf("copy %s out of sandbox %s: %w", src, v.Name, err)
	}
	defer rc.Close()
	out := CopyOutput{Path: filepath.Join(dir, opts.Top)}
	if err := untar.Extract(ctx, dir, rc, opts); err != nil {
		var re *untar.RefusedError
		if !errors.As(err, &re) {
			return nil, CopyOutput{}, fmt.Errorf("copy %s out of sandbox %s: %w", src, v.Name, err)
		}
		out.Note = fmt.Sprintf("%d entries not copied (the rest was): %s", n, strings.Join(refused, "; "))
	}
	s.cfg.Log.Info("copied out of sandbox", "vm", v.ID, "guest", src, "host", dir)
	return nil, out, nil
}

// PortsOutput lists listening ports.
type PortsOutput struct {
	Ports []api.Port `json:"ports"`
}

func (s *Server) listPorts(ctx context.Context, req *mcp.CallToolRequest, in SandboxRef) (*mcp.CallToolResult, PortsOutput, error) {
	v, err := s.owned(ctx, in.Sandbox)
	if err != nil {
		return nil, PortsOutput{}, err
	}
	ps, err := s.cfg.Client.VMPorts(ctx, v.ID)
	if ps == nil {
		ps = []api.Port{}
	}
	return nil, PortsOutput{Ports: ps}, err
}

// ExportInput is export_diff's input.
type ExportInput struct {
	Sandbox    string `json:"sandbox" jsonschema:"sandbox name"`
	BaseCommit string `json:"base_commit,omitempty" jsonschema:"diff from this commit instead of from the tree as copied in"`
	SaveTo     string `json:"save_to,omitempty" jsonschema:"also write the patch to this host file, inside a repository directory the user allowed (replaced whole)"`
}

// ExportOutput is the workspace's patch.
type ExportOutput struct {
	Patch   string `json:"patch" jsonschema:"the binary git patch; apply with git apply in the user's checkout"`
	Bytes   int64  `json:"bytes"`
	SavedTo string `json:"saved_to,omitempty"`
	Note    string `json:"note,omitempty"`
}

func (s *Server) exportDiff(ctx context.Context, req *mcp.CallToolRequest, in ExportInput) (*mcp.CallToolResult, ExportOutput, error) {
	v, err := s.owned(ctx, in.Sandbox)
	if err != nil {
		return nil, ExportOutput{}, err
	}
	if v.Workspace == "" {
		return nil, ExportOutput{}, fmt.Errorf("sandbox %s has no workspace: create one with a repo: %w", v.Name, errdefs.ErrFailedPrecondition)
	}
	var save string
	if in.SaveTo != "" {
		if save, err = s.roots.Resolve(in.SaveTo); err != nil {
			return nil, ExportOutput{}, err
		}
	}
	tmp, err := os.CreateTemp("", "banger-mcp-*.patch")
	if err != nil {
		return nil, ExportOutput{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	tree, err := workspace.FetchPatch(ctx, s.cfg.Client, v.ID, v.Workspace, in.BaseCommit, tmp)
	if err != nil {
		return nil, ExportOutput{}, err
	}
	size, _ := tmp.Seek(0, io.SeekCurrent)
	tmp.Seek(0, io.SeekStart)
	if err := workspace.CheckPatch(tmp); err != nil {
		return nil, ExportOutput{}, fmt.Errorf("export from sandbox %s: refusing the guest's patch: %w", v.Name, err)
	}
	tmp.Seek(0, io.SeekStart)
	b, err := io.ReadAll(io.LimitReader(tmp, maxPatchReturned))
	if err != nil {
		return nil, ExportOutput{}, err
	}
	out := ExportOutput{Patch: string(b), Bytes: size}
	if size > int64(len(b)) {
		out.Note = fmt.Sprintf("the patch is %d bytes; only the first %d are returned: pass save_to to write it whole to a host file", size, len(b))
	}
	if save != "" {
		tmp.Seek(0, io.SeekStart)
		if err := saveFile(save, tmp); err != nil {
			return nil, ExportOutput{}, err
		}
		out.SavedTo = save
	}
	if in.BaseCommit == "" {
		workspace.MarkExported(ctx, s.cfg.Client, v.ID, v.Workspace, tree)
	}
	return nil, out, nil
}

// saveFile replaces path with r's content in one step, never writing
// through a symbolic link.
func saveFile(path string, r io.Reader) error {
	af, err := atomicfile.Create(path, 0o644)
	if err != nil {
		return err
	}
	defer af.Close()
	if _, err := io.Copy(af.File, r); err != nil {
		return err
	}
	return af.Commit()
}

// StopOutput says how a sandbox stopped.
type StopOutput struct {
	Sandbox Sandbox `json:"sandbox"`
	Method  string  `json:"method" jsonschema:"agent: the guest synced and powered off; engine: the agent did not answer and the guest powered off on the power button; killed: recent writes may be lost"`
}

func (s *Server) stopSandbox(ctx context.Context, req *mcp.CallToolRequest, in SandboxRef) (*mcp.CallToolResult, StopOutput, error) {
	v, err := s.owned(ctx, in.Sandbox)
	if err != nil {
		return nil, StopOutput{}, err
	}
	r, err := s.cfg.Client.StopVM(ctx, v.ID)
	if err != nil {
		return nil, StopOutput{}, err
	}
	return nil, StopOutput{Sandbox: sandbox(r.VM), Method: r.Method}, nil
}

func (s *Server) startSandbox(ctx context.Context, req *mcp.CallToolRequest, in SandboxRef) (*mcp.CallToolResult, Sandbox, error) {
	v, err := s.owned(ctx, in.Sandbox)
	if err != nil {
		return nil, Sandbox{}, err
	}
	report := progress(ctx, req)
	v, err = s.cfg.Client.StartVM(ctx, v.ID, func(e api.Event) {
		if e.Message != "" {
			report(e.Message)
		}
	})
	if err != nil {
		return nil, Sandbox{}, err
	}
	return nil, sandbox(v), nil
}

// DeleteOutput names what was deleted.
type DeleteOutput struct {
	Deleted string `json:"deleted"`
}

func (s *Server) deleteSandbox(ctx context.Context, req *mcp.CallToolRequest, in SandboxRef) (*mcp.CallToolResult, DeleteOutput, error) {
	v, err := s.owned(ctx, in.Sandbox)
	if err != nil {
		return nil, DeleteOutput{}, err
	}
	if err := s.cfg.Client.DeleteVM(ctx, v.ID, true); err != nil {
		return nil, DeleteOutput{}, err
	}
	s.cfg.Log.Info("sandbox deleted", "vm", v.ID, "name", v.Name)
	return nil, DeleteOutput{Deleted: v.Name}, nil
}

// ListOutput lists the server's sandboxes.
type ListOutput struct {
	Sandboxes []Sandbox `json:"sandboxes"`
	MaxVMs    int       `json:"max_sandboxes" jsonschema:"how many may exist at once"`
}

func (s *Server) listSandboxes(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, ListOutput, error) {
	vms, err := s.cfg.Client.VMsLabeled(ctx, s.selector())
	if err != nil {
		return nil, ListOutput{}, err
	}
	out := ListOutput{Sandboxes: []Sandbox{}, MaxVMs: s.cfg.MaxVMs}
	for _, v := range vms {
		out.Sandboxes = append(out.Sandboxes, sandbox(v))
	}
	return nil, out, nil
}
