package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/client"
	"github.com/bangervm/banger/internal/apiserver"
	"github.com/bangervm/banger/internal/paths"
)

// hostile is what a guest might print to retitle and clear the user's
// terminal.
const hostile = "boot ok\r\n\x1b]0;pwned\x07\x1b[2Jhidden\u009b31m\n"

// hostileVMs serves VM "box" whose console holds hostile, and whose stop
// fails with an error quoting it, as a failed boot quotes the console.
type hostileVMs struct {
	apiserver.VMs
	console string
}

func (v hostileVMs) ConsoleLog(ctx context.Context, ref string) (string, api.VM, error) {
	return v.console, api.VM{Name: ref}, nil
}

func (v hostileVMs) Get(ctx context.Context, ref string) (api.VM, error) {
	return api.VM{Name: ref, State: api.VMError, Reason: "vm " + ref + " did not boot\nguest console (last lines):\n" + hostile}, nil
}

func (v hostileVMs) Stop(ctx context.Context, ref string) (api.StopResult, error) {
	return api.StopResult{}, fmt.Errorf("vm %s did not stop; guest console:\n%s", ref, hostile)
}

func serveHostile(t *testing.T) *Factory {
	t.Helper()
	console := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(console, []byte(hostile), 0o600); err != nil {
		t.Fatal(err)
	}
	c := client.New(serveAPI(t, apiserver.Config{VMs: hostileVMs{console: console}}))
	streams, _, _ := TestStreams()
	return &Factory{IO: streams, Layout: paths.Under(t.TempDir()), Client: func(context.Context) (*client.Client, error) { return c, nil }}
}

// checkEscaped fails if out holds an escape or control character other than
// newline and tab, or lacks the visible form of the hostile sequences.
func checkEscaped(t *testing.T, what, out string) {
	t.Helper()
	if i := strings.IndexFunc(out, func(r rune) bool {
		return (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r <= 0x9f)
	}); i >= 0 {
		t.Errorf("%s: control character %q reached the terminal: %q", what, out[i], out)
	}
	for _, want := range []string{`\x1b]0;pwned\x07`, `\x1b[2J`, `\u009b31m`} {
		if !strings.Contains(out, want) {
			t.Errorf("%s: %q missing from %q", what, want, out)
		}
	}
}

func TestVMLogsEscapesOnTerminal(t *testing.T) {
	tests := []struct {
		name string
		tty  bool
		args []string
		want string // "" means escaped
	}{
		{name: "terminal", tty: true, args: []string{"vm", "logs", "box"}},
		{name: "terminal follow", tty: true, args: []string{"vm", "logs", "-f", "box"}},
		{name: "terminal raw", tty: true, args: []string{"vm", "logs", "--raw", "box"}, want: hostile},
		{name: "pipe", tty: false, args: []string{"vm", "logs", "box"}, want: hostile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := serveHostile(t)
			var out, errOut strings.Builder
			f.IO.Out, f.IO.ErrOut, f.IO.OutTTY = &out, &errOut, tt.tty
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// Following ends when the user interrupts: here, once the
			// console's last line has arrived.
			f.IO.Out = cancelOnLine{&out, "m\n", cancel}
			root := NewRootCmd(f)
			root.SetArgs(tt.args)
			if err := root.ExecuteContext(ctx); err != nil {
				t.Fatalf("%v, stderr %q", err, errOut.String())
			}
			if tt.want != "" {
				if out.String() != tt.want {
					t.Errorf("stdout %q, want the console unchanged %q", out.String(), tt.want)
				}
				return
			}
			checkEscaped(t, "stdout", out.String())
		})
	}
}

// An error that quotes a guest's console reaches the terminal escaped.
func TestErrorTextEscaped(t *testing.T) {
	f := serveHostile(t)
	var errOut strings.Builder
	f.IO.ErrOut = &errOut
	if code := Run(f, []string{"vm", "stop", "box"}); code != ExitFailure {
		t.Fatalf("exit %d, want %d", code, ExitFailure)
	}
	checkEscaped(t, "stderr", errOut.String())
}

// A failed boot's reason, shown by vm show, quotes the console.
func TestVMShowReasonEscaped(t *testing.T) {
	f := serveHostile(t)
	var out strings.Builder
	f.IO.Out = &out
	if code := Run(f, []string{"vm", "show", "box"}); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	checkEscaped(t, "vm show", out.String())
}

func TestProgressEscaped(t *testing.T) {
	for _, tty := range []bool{false, true} {
		streams, _, errOut := TestStreams()
		streams.ErrTTY = tty
		p := newProgress(streams)
		p.event(api.Event{Phase: "boot", Message: hostile})
		out := strings.ReplaceAll(errOut.String(), "\r\x1b[K", "") // the bar's own redraw
		checkEscaped(t, fmt.Sprintf("progress (tty %v)", tty), out)
	}
}

// cancelOnLine calls cancel once a Write ends with suffix.
type cancelOnLine struct {
	w      io.Writer
	suffix string
	cancel func()
}

func (c cancelOnLine) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if strings.HasSuffix(string(p), c.suffix) {
		c.cancel()
	}
	return n, err
}
