package cli

import (
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"syscall"
	"testing"
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
