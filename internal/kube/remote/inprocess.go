package remote

import (
	"context"
	"net"
	"net/http"
	"sync"
)

// InProcess serves h on in-memory connections: dial makes one (for
// client.NewWithDial), served by an http.Server in this process, so the
// client's requests, streams and upgrades (exec) behave as over a socket.
// stop closes the server and every connection.
func InProcess(h http.Handler) (dial func(ctx context.Context) (net.Conn, error), stop func()) {
	l := &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	return l.dial, func() {
		l.close()
		srv.Close()
	}
}

// pipeListener hands the server ends of net.Pipe connections to
// http.Server.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
	case <-ctx.Done():
		client.Close()
		server.Close()
		return nil, &net.OpError{Op: "dial", Net: "pipe", Err: ctx.Err()}
	}
	client.Close()
	server.Close()
	return nil, &net.OpError{Op: "dial", Net: "pipe", Err: net.ErrClosed}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) close() { l.once.Do(func() { close(l.done) }) }

func (l *pipeListener) Close() error   { l.close(); return nil }
func (l *pipeListener) Addr() net.Addr { return addr("in-process") }

type addr string

func (a addr) Network() string { return "pipe" }
func (a addr) String() string  { return string(a) }
