package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/bangervm/banger/internal/testutil"
)

// mcpConn is a session of the Go SDK's own MCP client with a `banger mcp`
// it started over stdio.
type mcpConn struct {
	t        *testing.T
	s        *mcp.ClientSession
	cmd      *exec.Cmd
	stderr   *testutil.LockedBuffer
	progress atomic.Int32
}

func (e *env) startMCP(t *testing.T, args ...string) *mcpConn {
	t.Helper()
	m := &mcpConn{t: t, stderr: &testutil.LockedBuffer{}}
	m.cmd = e.cmd(context.Background(), append([]string{"mcp"}, args...)...)
	m.cmd.Stderr = m.stderr
	c := mcp.NewClient(&mcp.Implementation{Name: "banger-e2e", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) { m.progress.Add(1) },
	})
	s, err := c.Connect(context.Background(), &mcp.CommandTransport{Command: m.cmd, TerminateDuration: 2 * time.Minute}, nil)
	if err != nil {
		t.Fatalf("connect to banger mcp: %v\n%s", err, m.stderr)
	}
	m.s = s
	t.Cleanup(func() { m.s.Close() })
	return m
}

// call calls a tool and returns its result, its text and whether it was
// a tool error.
func (m *mcpConn) call(name string, args any) (*mcp.CallToolResult, string) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := &mcp.CallToolParams{Name: name, Arguments: args}
	p.SetProgressToken(name)
	res, err := m.s.CallTool(ctx, p)
	if err != nil {
		m.t.Fatalf("%s: %v\nserver stderr:\n%s", name, err, m.stderr)
	}
	var text strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			text.WriteString(tc.Text)
		}
	}
	return res, text.String()
}

// ok calls a tool that must succeed and decodes its structured result.
func (m *mcpConn) ok(name string, args, out any) {
	m.t.Helper()
	res, text := m.call(name, args)
	if res.IsError {
		m.t.Fatalf("%s %v: tool error: %s\nserver stderr:\n%s", name, args, text, m.stderr)
	}
	if out != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			m.t.Fatalf("%s: %v: %s", name, err, b)
		}
	}
}

// leave closes the client's side and waits for the server to exit.
func (m *mcpConn) leave() {
	m.t.Helper()
	m.s.Close()
	done := make(chan error, 1)
	go func() { done <- m.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		m.t.Fatalf("banger mcp still running 2 min after its client left\n%s", m.stderr)
	}
}

// refused calls a tool that must fail with an error mentioning want.
func (m *mcpConn) refused(name string, args any, want string) {
	m.t.Helper()
	res, text := m.call(name, args)
	if !res.IsError || !strings.Contains(text, want) {
		m.t.Errorf("%s %v: error %v, %q; want a refusal mentioning %q", name, args, res.IsError, text, want)
	}
}

// mcpRun is run_command's result.
type mcpRun struct {
	ExitCode             int  `json:"exit_code"`
	TimedOut             bool `json:"timed_out"`
	Stdout, Stderr, Note string
}

type mcpSandbox struct {
	Name, ID, State, Workspace string
	ExpiresAt                  *time.Time `json:"expires_at"`
}

// TestMCPFlow drives `banger mcp` with the Go SDK's client as an agent
// would: a sandbox made from a host repository, commands (a failing one, a
// timed-out one), a file written and read, files copied both ways, the
// workspace diff exported and applied on the host; and the scope: the
// user's other VMs, host paths outside --repo and a second sandbox over
// --max-vms are refused.
func TestMCPFlow(t *testing.T) {
	e := sharedDebianEnv(t)
	base := t.TempDir()
	repo := filepath.Join(base, "proj")
	os.MkdirAll(repo, 0o755)
	git(t, repo, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "check.sh"), []byte("#!/bin/sh\necho tests pass\n"), 0o755)
	os.WriteFile(filepath.Join(repo, "main.txt"), []byte("one\n"), 0o644)
	git(t, repo, "add", "-A")
	git(t, repo, "commit", "-qm", "init")
	os.WriteFile(filepath.Join(base, "secret"), []byte("host secret\n"), 0o600)
	os.Symlink(filepath.Join(base, "secret"), filepath.Join(repo, "leak"))
	e.ok("vm", "create", "--no-start", "--name", "users-vm", "--image", "debian-bookworm")
	t.Cleanup(func() { e.run("vm", "delete", "-f", "users-vm") })

	m := e.startMCP(t, "--repo", repo, "--max-vms", "1", "--net", "none", "--ttl", "30m", "--image", "debian-bookworm")
	tools, err := m.s.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
		if tl.Description == "" || tl.InputSchema == nil {
			t.Errorf("tool %s lacks a description or schema", tl.Name)
		}
	}
	for _, want := range []string{"create_sandbox", "run_command", "read_file", "write_file", "copy_in", "copy_out", "list_ports", "export_diff", "stop_sandbox", "delete_sandbox", "list_sandboxes"} {
		if !strings.Contains(","+strings.Join(names, ",")+",", ","+want+",") {
			t.Errorf("no tool %s among %v", want, names)
		}
	}

	// A repository outside --repo is refused before any VM is made.
	m.refused("create_sandbox", map[string]any{"repo": base}, "outside the directories")
	var sb mcpSandbox
	m.ok("create_sandbox", map[string]any{"repo": repo}, &sb)
	if sb.Workspace != "/root/repo" || sb.State != "running" || sb.ExpiresAt == nil || time.Until(*sb.ExpiresAt) > 31*time.Minute {
		t.Errorf("sandbox %+v", sb)
	}
	if m.progress.Load() == 0 {
		t.Error("create_sandbox sent no progress notifications")
	}

	var r mcpRun
	m.ok("run_command", map[string]any{"sandbox": sb.Name, "command": "./check.sh && pwd"}, &r)
	if r.ExitCode != 0 || r.Stdout != "tests pass\n/root/repo\n" {
		t.Errorf("./check.sh: %+v", r)
	}
	m.ok("run_command", map[string]any{"sandbox": sb.Name, "command": "echo oops >&2; exit 3"}, &r)
	if r.ExitCode != 3 || r.Stderr != "oops\n" {
		t.Errorf("exit 3: %+v", r)
	}
	m.ok("run_command", map[string]any{"sandbox": sb.Name, "command": "echo started; sleep 600", "timeout_seconds": 2}, &r)
	if !r.TimedOut || r.Stdout != "started\n" || !strings.Contains(r.Note, "killed after 2s") {
		t.Errorf("timeout: %+v", r)
	}
	m.ok("run_command", map[string]any{"sandbox": sb.Name, "command": "head -c 100000 /dev/zero | tr '\\0' x"}, &r)
	if len(r.Stdout) > 40000 || !strings.Contains(r.Stdout, "bytes cut") || !strings.Contains(r.Note, "stdout:") {
		t.Errorf("long output: %d bytes, note %q", len(r.Stdout), r.Note)
	}

	// Edits: a new file, a change, a commit in the guest.
	m.ok("write_file", map[string]any{"sandbox": sb.Name, "path": "src/new.txt", "content": "written by the agent\n"}, nil)
	m.ok("run_command", map[string]any{"sandbox": sb.Name, "command": "echo two >> main.txt && git add -A && git -c user.name=a -c user.email=a@b commit -qm agent && echo done"}, &r)
	if r.ExitCode != 0 {
		t.Fatalf("commit in the guest: %+v", r)
	}
	var rd struct{ Content string }
	m.ok("read_file", map[string]any{"sandbox": sb.Name, "path": "/root/repo/main.txt"}, &rd)
	if rd.Content != "one\ntwo\n" {
		t.Errorf("read_file: %q", rd.Content)
	}
	var ports struct{ Ports []any }
	m.ok("list_ports", map[string]any{"sandbox": sb.Name}, &ports)

	// Copies, inside the repository only.
	m.ok("copy_in", map[string]any{"sandbox": sb.Name, "host_path": "check.sh", "guest_dir": "/tmp/in"}, nil)
	m.ok("run_command", map[string]any{"sandbox": sb.Name, "command": "/tmp/in/check.sh"}, &r)
	if !strings.Contains(r.Stdout, "tests pass") {
		t.Errorf("copied in: %+v", r)
	}
	os.MkdirAll(filepath.Join(repo, "out"), 0o755)
	m.ok("copy_out", map[string]any{"sandbox": sb.Name, "guest_path": "src/new.txt", "host_dir": filepath.Join(repo, "out")}, nil)
	if b, _ := os.ReadFile(filepath.Join(repo, "out", "new.txt")); string(b) != "written by the agent\n" {
		t.Errorf("copied out: %q", b)
	}
	os.RemoveAll(filepath.Join(repo, "out"))
	m.refused("copy_in", map[string]any{"sandbox": sb.Name, "host_path": "leak", "guest_dir": "/tmp"}, "outside the directories")
	m.refused("copy_in", map[string]any{"sandbox": sb.Name, "host_path": "/etc/hostname", "guest_dir": "/tmp"}, "outside the directories")
	m.refused("copy_out", map[string]any{"sandbox": sb.Name, "guest_path": "main.txt", "host_dir": repo + "/.."}, `".." is not allowed`)
	m.refused("export_diff", map[string]any{"sandbox": sb.Name, "save_to": filepath.Join(base, "x.patch")}, "outside the directories")

	// The user's other VM is out of reach, by name and by id.
	var users struct{ ID string }
	testutilJSON(t, e.ok("vm", "show", "users-vm", "--json"), &users)
	m.refused("run_command", map[string]any{"sandbox": "users-vm", "command": "true"}, `no sandbox "users-vm"`)
	m.refused("delete_sandbox", map[string]any{"sandbox": users.ID}, "no sandbox")
	m.refused("read_file", map[string]any{"sandbox": "users-vm", "path": "/etc/hostname"}, "no sandbox")
	var list struct{ Sandboxes []mcpSandbox }
	m.ok("list_sandboxes", map[string]any{}, &list)
	if len(list.Sandboxes) != 1 || list.Sandboxes[0].Name != sb.Name {
		t.Errorf("list_sandboxes: %+v", list.Sandboxes)
	}
	// --max-vms 1.
	m.refused("create_sandbox", map[string]any{}, "--max-vms 1")

	// The diff comes back as a patch that applies to the host checkout.
	var ex struct {
		Patch   string
		SavedTo string `json:"saved_to"`
	}
	m.ok("export_diff", map[string]any{"sandbox": sb.Name, "save_to": "agent.patch"}, &ex)
	if !strings.Contains(ex.Patch, "src/new.txt") || !strings.Contains(ex.Patch, "+two") || ex.SavedTo != filepath.Join(repo, "agent.patch") {
		t.Errorf("export_diff: saved to %q, patch:\n%s", ex.SavedTo, ex.Patch)
	}
	os.Remove(filepath.Join(repo, "agent.patch"))
	apply := exec.Command("git", "-C", repo, "apply")
	apply.Stdin = strings.NewReader(ex.Patch)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("git apply: %v %s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(repo, "src", "new.txt")); string(b) != "written by the agent\n" {
		t.Errorf("after git apply: src/new.txt %q", b)
	}

	m.ok("delete_sandbox", map[string]any{"sandbox": sb.Name}, nil)
	m.ok("list_sandboxes", map[string]any{}, &list)
	if len(list.Sandboxes) != 0 {
		t.Errorf("after delete: %+v", list.Sandboxes)
	}
	if r := e.run("vm", "show", "users-vm"); r.code != 0 {
		t.Errorf("the user's VM is gone: %s", r.err)
	}
}

// TestMCPCleanupAndTTL: a sandbox asked for with a short time-to-live is
// deleted by the daemon; the server's remaining sandboxes are deleted when
// its client goes away, and nothing else is.
func TestMCPCleanupAndTTL(t *testing.T) {
	e := newVMEnvWith(t, "")
	e.ok("vm", "create", "--no-start", "--name", "bystander", "--image", "bb")
	m := e.startMCP(t, "--net", "none", "--ttl", "1h", "--image", "bb")

	var brief, kept mcpSandbox
	m.ok("create_sandbox", map[string]any{"name": "brief", "ttl_seconds": 3}, &brief)
	m.refused("create_sandbox", map[string]any{"ttl_seconds": 7200}, "ttl_seconds 7200")
	m.ok("create_sandbox", map[string]any{"name": "kept"}, &kept)
	var list struct{ Sandboxes []mcpSandbox }
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		m.ok("list_sandboxes", map[string]any{}, &list)
		if len(list.Sandboxes) == 1 {
			break
		}
		time.Sleep(time.Second)
	}
	if len(list.Sandboxes) != 1 || list.Sandboxes[0].Name != "kept" {
		t.Fatalf("60 s after brief's 3 s TTL: %+v", list.Sandboxes)
	}

	// The client goes away: the server deletes kept, and exits.
	m.leave()
	if r := e.run("vm", "show", "kept"); r.code == 0 {
		t.Errorf("sandbox kept survived its client\nserver stderr:\n%s", m.stderr)
	}
	if !strings.Contains(m.stderr.String(), "client went away") {
		t.Errorf("server did not log the cleanup:\n%s", m.stderr)
	}
	if r := e.run("vm", "show", "bystander"); r.code != 0 {
		t.Errorf("the user's VM went with the server's: %s", r.err)
	}
}

// TestMCPKeepAndStop: a sandbox stopped through the server keeps what was
// written to its disk when started again, and with --keep the server's
// sandboxes outlive its client.
func TestMCPKeepAndStop(t *testing.T) {
	e := newVMEnvWith(t, "")
	t.Cleanup(func() { e.run("vm", "delete", "-f", "held") })
	m := e.startMCP(t, "--net", "none", "--keep", "--image", "bb")
	var sb mcpSandbox
	m.ok("create_sandbox", map[string]any{"name": "held"}, &sb)
	var r mcpRun
	m.ok("run_command", map[string]any{"sandbox": "held", "command": "echo kept > /root/mark", "workdir": "/"}, &r)
	var stopped struct {
		Sandbox mcpSandbox
		Method  string
	}
	m.ok("stop_sandbox", map[string]any{"sandbox": "held"}, &stopped)
	if stopped.Method != "agent" || stopped.Sandbox.State != "stopped" {
		t.Errorf("stop_sandbox: %+v, want a synced stop", stopped)
	}
	m.ok("start_sandbox", map[string]any{"sandbox": "held"}, &sb)
	m.ok("run_command", map[string]any{"sandbox": "held", "command": "cat /root/mark", "workdir": "/"}, &r)
	if r.ExitCode != 0 || r.Stdout != "kept\n" {
		t.Errorf("after stop and start: %+v", r)
	}

	m.leave()
	var v struct{ State string }
	testutilJSON(t, e.ok("vm", "show", "held", "--json"), &v)
	if v.State != "running" {
		t.Errorf("with --keep, the sandbox after its client left: %q, want running", v.State)
	}
}

// inspector is the MCP reference inspector, installed by .ci/install-deps.
const inspector = "/opt/banger-ci/mcp-inspector/bin/mcp-inspector"

// TestMCPInspector: the reference inspector's command-line mode lists
// banger's tools and calls one.
func TestMCPInspector(t *testing.T) {
	_, err := os.Stat(inspector)
	testutil.Require(t, err == nil, "the MCP inspector at "+inspector+" (.ci/install-deps installs it with npm)")
	e := newEnv(t)
	e.writeConfig("")
	// Start the daemon first: the inspector's timeout is short.
	e.ok("vm", "list")
	inspect := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		argv := append([]string{"--cli", filepath.Join(binDir, "banger"), "mcp", "--max-vms", "2"}, args...)
		cmd := exec.CommandContext(ctx, inspector, argv...)
		cmd.Env = append(os.Environ(), "BANGER_HOME="+e.home, "BANGERD="+filepath.Join(binDir, "bangerd"))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("mcp-inspector %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	var tools struct {
		Tools []struct {
			Name        string
			InputSchema map[string]any
		}
	}
	out := inspect("--method", "tools/list")
	if err := json.Unmarshal([]byte(out), &tools); err != nil {
		t.Fatalf("tools/list: %v\n%s", err, out)
	}
	found := false
	for _, tl := range tools.Tools {
		found = found || (tl.Name == "run_command" && fmt.Sprint(tl.InputSchema["required"]) == "[sandbox command]")
	}
	if !found {
		t.Errorf("no run_command requiring sandbox and command in:\n%s", out)
	}
	out = inspect("--method", "tools/call", "--tool-name", "list_sandboxes")
	if !strings.Contains(out, `"max_sandboxes": 2`) && !strings.Contains(out, `\"max_sandboxes\":2`) {
		t.Errorf("tools/call list_sandboxes:\n%s", out)
	}
}
