// Package podexec makes a byte stream out of a command run in a Pod through
// the exec subresource: what the caller writes is the command's standard
// input, what it reads is its standard output. banger reaches a launcher's
// API this way (`banger-launcher api` copies stdio to the API socket), so
// the Pod opens no port and the user needs only `pods/exec create`.
package podexec

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// Target is the container a command runs in.
type Target struct {
	Namespace, Pod, Container string
}

func (t Target) String() string { return t.Namespace + "/" + t.Pod + "/" + t.Container }

// maxStderr bounds what of the command's standard error is kept for an
// error message.
const maxStderr = 4 << 10

// Dial starts command in t and returns a connection to its stdin and
// stdout. The exec is under way when Dial returns; a failure to start it
// (no such Pod, no RBAC right, the command missing) comes back from the
// first Read, with the command's standard error. Close ends the command's
// input and the exec stream; ctx bounds the whole exec.
func Dial(ctx context.Context, cfg *rest.Config, t Target, command []string) (net.Conn, error) {
	rc, err := restClient(cfg)
	if err != nil {
		return nil, err
	}
	req := rc.Post().Resource("pods").Namespace(t.Namespace).Name(t.Pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: t.Container, Command: command, Stdin: true, Stdout: true, Stderr: true}, scheme.ParameterCodec)
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", t, err)
	}
	// Websockets first, as kubectl does; SPDY for an apiserver that
	// does not upgrade them.
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", t, err)
	}
	ex, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return nil, fmt.Errorf("exec in %s: %w", t, err)
	}

	ctx, cancel := context.WithCancel(ctx)
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &conn{target: t, in: inW, out: outR, cancel: cancel}
	go func() {
		var stderr capped
		err := ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: inR, Stdout: outW, Stderr: &stderr})
		if err == nil {
			err = io.EOF
		} else {
			msg := strings.TrimSpace(stderr.String())
			if msg != "" {
				err = fmt.Errorf("exec %s in %s: %w: %s", strings.Join(command, " "), t, err, msg)
			} else {
				err = fmt.Errorf("exec %s in %s: %w", strings.Join(command, " "), t, err)
			}
		}
		outW.CloseWithError(err)
		inR.CloseWithError(err)
		cancel()
	}()
	return c, nil
}

func restClient(cfg *rest.Config) (*rest.RESTClient, error) {
	c := rest.CopyConfig(cfg)
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.APIPath = "/api"
	c.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return rc, nil
}

// conn is the exec stream as a net.Conn. It has no deadlines: the exec's
// context bounds it.
type conn struct {
	target    Target
	in        *io.PipeWriter
	out       *io.PipeReader
	cancel    context.CancelFunc
	closeOnce sync.Once
}

func (c *conn) Read(p []byte) (int, error)  { return c.out.Read(p) }
func (c *conn) Write(p []byte) (int, error) { return c.in.Write(p) }

// Close ends the command's input and the stream.
func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.in.Close()
		c.out.CloseWithError(net.ErrClosed)
		c.cancel()
	})
	return nil
}

func (c *conn) LocalAddr() net.Addr                { return addr("local") }
func (c *conn) RemoteAddr() net.Addr               { return addr(c.target.String()) }
func (c *conn) SetDeadline(t time.Time) error      { return nil }
func (c *conn) SetReadDeadline(t time.Time) error  { return nil }
func (c *conn) SetWriteDeadline(t time.Time) error { return nil }

type addr string

func (a addr) Network() string { return "pods/exec" }
func (a addr) String() string  { return string(a) }

// capped keeps the first maxStderr bytes written to it.
type capped struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := maxStderr - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}
