package cli

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/paths"
)

// TestTransient: the connection errors of a daemon closing a connection
// while it starts or stops, as net/http wraps them, are retried; others
// are not.
func TestTransient(t *testing.T) {
	wrap := func(op string, err error) error {
		return &url.Error{Op: "Get", URL: "http://bangerd/v1/version", Err: &net.OpError{Op: op, Net: "unix", Err: os.NewSyscallError(op, err)}}
	}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{wrap("write", syscall.EPIPE), true},
		{wrap("read", syscall.ECONNRESET), true},
		{&url.Error{Op: "Get", Err: io.EOF}, true},
		{wrap("dial", syscall.EACCES), false},
		{errors.New("permission denied"), false},
	} {
		if got := transient(c.err); got != c.want {
			t.Errorf("transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// A daemon that fails as it starts is reported at once, in its own words
// from its log (escaped), not after waiting for it to answer; one that
// lost the start race to another daemon is waited for.
func TestConnectReportsDaemonStartFailure(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "bangerd")
	script := "#!/bin/sh\necho 'time=x level=ERROR msg=\"bangerd exited\"'\necho 'bangerd: store schema 99 was written by a newer banger (this one knows 12): \033[2Jupgrade banger'\nexit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BANGERD", fake)
	layout := paths.Under(filepath.Join(dir, "home"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := connect(ctx, layout, -1)
	if err == nil || !strings.Contains(err.Error(), "store schema 99 was written by a newer banger") || !strings.Contains(err.Error(), "status 1") {
		t.Fatalf("connect: %v; want the daemon's own error", err)
	}
	if strings.Contains(err.Error(), "\033") || strings.Contains(err.Error(), "within 15s") {
		t.Errorf("connect: %q; want it escaped, and not a timeout", err)
	}
	if strings.Contains(err.Error(), "level=ERROR") {
		t.Errorf("connect: %q; want the bangerd: line, not the structured log line", err)
	}
}
