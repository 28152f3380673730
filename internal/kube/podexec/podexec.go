// Package podexec reaches a Sandbox launcher's API: a net.Conn carried by
// one exec of `banger-launcher api` in the launcher's container, through
// the Pod's exec subresource (RBAC: pods/exec create). One exec is one
// connection; closing the connection ends the exec. No port is opened in
// the Pod.
package podexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
)

// Command is what the exec runs in the container.
var Command = []string{"banger-launcher", "api"}

// stderrMax bounds what of the exec's stderr an error quotes.
const stderrMax = 4 << 10

// Dial starts `banger-launcher api` in container of namespace/pod and
// returns a connection to the launcher's API carried by the exec's stdin
// and stdout. The exec's failure (the Pod gone, RBAC refusing it, the
// launcher not serving) shows as the connection's read error, with what
// the command wrote to stderr. ctx bounds only the setup; Close ends the
// exec.
func Dial(ctx context.Context, cfg *rest.Config, namespace, pod, container string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("exec in pod %s/%s: %w", namespace, pod, err)
	}
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: container, Command: Command, Stdin: true, Stdout: true, Stderr: true},
			scheme.ParameterCodec)
	exec, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		return nil, fmt.Errorf("exec in pod %s/%s: %w", namespace, pod, err)
	}
	inR, inW := io.Pipe()
	outR, pw := io.Pipe()
	outW := &sink{w: pw}
	sctx, cancel := context.WithCancel(context.Background())
	c := &conn{in: inW, out: outR, sink: outW, cancel: cancel, done: make(chan struct{}), where: namespace + "/" + pod}
	go func() {
		defer close(c.done)
		err := exec.StreamWithContext(sctx, remotecommand.StreamOptions{Stdin: inR, Stdout: outW, Stderr: &c.stderr})
		if err == nil {
			err = io.EOF
		} else {
			err = fmt.Errorf("exec %s in pod %s: %w%s", strings.Join(Command, " "), c.where, err, c.stderr.quote())
		}
		c.err = err
		// The stdin copy ends at EOF; this side's writes fail with err.
		inW.Close()
		pw.CloseWithError(err)
	}()
	return c, nil
}

type conn struct {
	in     *io.PipeWriter
	out    *io.PipeReader
	sink   *sink
	cancel context.CancelFunc
	done   chan struct{}
	err    error // why the exec ended, once done is closed
	where  string
	stderr boundedBuffer
	once   sync.Once
}

func (c *conn) Read(p []byte) (int, error) { return c.out.Read(p) }
func (c *conn) Write(p []byte) (int, error) {
	n, err := c.in.Write(p)
	if err != nil {
		select {
		case <-c.done:
			return n, c.err
		default:
		}
	}
	return n, err
}

// Close ends stdin (the launcher then ends its side) and the exec.
func (c *conn) Close() error {
	c.once.Do(func() {
		c.in.Close()
		c.sink.drop()
		c.out.CloseWithError(net.ErrClosed)
		c.cancel()
	})
	return nil
}

type execAddr string

func (a execAddr) Network() string { return "pod-exec" }
func (a execAddr) String() string  { return string(a) }

func (c *conn) LocalAddr() net.Addr  { return execAddr("local") }
func (c *conn) RemoteAddr() net.Addr { return execAddr(c.where) }

// Deadlines are not supported: cancel the request's context instead
// (the client closes the connection when it is cancelled).
func (c *conn) SetDeadline(time.Time) error      { return errors.ErrUnsupported }
func (c *conn) SetReadDeadline(time.Time) error  { return errors.ErrUnsupported }
func (c *conn) SetWriteDeadline(time.Time) error { return errors.ErrUnsupported }

// sink is the exec's stdout: into the pipe the connection reads, and
// dropped once the connection is closed (a closed pipe would be an error
// client-go logs).
type sink struct {
	w       *io.PipeWriter
	dropped atomic.Bool
}

func (s *sink) Write(p []byte) (int, error) {
	if s.dropped.Load() {
		return len(p), nil
	}
	n, err := s.w.Write(p)
	if err != nil && s.dropped.Load() {
		return len(p), nil
	}
	return n, err
}

func (s *sink) drop() { s.dropped.Store(true) }

// boundedBuffer keeps the first stderrMax bytes written to it.
type boundedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := stderrMax - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *boundedBuffer) quote() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := strings.TrimSpace(strings.ToValidUTF8(string(b.buf), "?")); s != "" {
		return fmt.Sprintf(" (stderr: %q)", s)
	}
	return ""
}
