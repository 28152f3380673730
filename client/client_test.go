package client

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/testutil"
)

// TestRefusesOtherUsersSocket: a socket another user owns is refused
// before the client sends anything, with an error that is not "daemon
// down" (which would make the CLI start a daemon and retry).
func TestRefusesOtherUsersSocket(t *testing.T) {
	testutil.RequireRoot(t)
	sock := filepath.Join(t.TempDir(), "bangerd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan int, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		n, _ := c.Read(make([]byte, 1024))
		got <- n
		c.Close()
	}()
	if err := os.Lchown(sock, testutil.Nobody, testutil.Nobody); err != nil {
		t.Fatal(err)
	}
	_, err = New(sock).Version(context.Background())
	if !errdefs.IsPermissionDenied(err) || IsDaemonDown(err) || !strings.Contains(err.Error(), sock) {
		t.Fatalf("got %v, want a refusal naming %s", err, sock)
	}
	if n := <-got; n != 0 {
		t.Errorf("client sent %d bytes to another user's socket", n)
	}
}
