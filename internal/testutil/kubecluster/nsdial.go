package kubecluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bangervm/banger/internal/hostcmd"
)

// inNetNS runs f on a thread switched into the network namespace at
// nsPath: sockets f makes belong to that namespace for good, after the
// thread switches back.
func inNetNS(nsPath string, f func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", nsPath, err)
			return
		}
		f()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) != nil {
			// The thread stays locked and ends with this goroutine:
			// never reuse a thread left in another namespace.
			errc <- nil
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return <-errc
}

// dialIn opens a TCP connection from inside the network namespace at
// nsPath.
func dialIn(nsPath, addr string) (net.Conn, error) {
	var c net.Conn
	var err error
	if nerr := inNetNS(nsPath, func() { c, err = net.DialTimeout("tcp", addr, 10*time.Second) }); nerr != nil {
		return nil, nerr
	}
	return c, err
}

// Listen listens on TCP port (0: any free one) of the node's address,
// inside the cluster's namespace, where Pods reach it through the CNI
// bridge and nothing outside the namespace can: for a registry the
// launcher pulls from.
func (c *Cluster) Listen(port int) (net.Listener, error) {
	var ln net.Listener
	var err error
	if nerr := inNetNS(c.NetNS, func() { ln, err = net.Listen("tcp", net.JoinHostPort(nodeIP.String(), strconv.Itoa(port))) }); nerr != nil {
		return nil, nerr
	}
	return ln, err
}

// forwarder listens on the host's loopback and joins each connection to
// addr inside the namespace: the test's clients (client-go, including
// exec's streaming upgrades, which ignore a rest.Config's Dial) reach the
// apiserver with no address or route added to the host.
type forwarder struct {
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func forward(nsPath, addr string) (*forwarder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &forwarder{ln: ln, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.pipe(c, nsPath, addr)
			}()
		}
	}()
	return f, nil
}

func (f *forwarder) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *forwarder) pipe(c net.Conn, nsPath, addr string) {
	if !f.track(c) {
		return
	}
	up, err := dialIn(nsPath, addr)
	if err != nil {
		c.Close()
		return
	}
	if !f.track(up) {
		c.Close()
		return
	}
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
	c.Close()
	up.Close()
}

// Addr is the host-side address, 127.0.0.1:PORT.
func (f *forwarder) Addr() string { return f.ln.Addr().String() }

// Close stops listening, ends every open connection and waits for them.
func (f *forwarder) Close() {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	if err := f.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return
	}
	f.wg.Wait()
}

// ListenIn listens on TCP addr inside the network namespace at nsPath:
// the cluster's (NetNS), or a Pod's (/proc/PID/ns/net of one of its
// processes), which the test's cluster made.
func ListenIn(nsPath, addr string) (net.Listener, error) {
	var ln net.Listener
	var err error
	if nerr := inNetNS(nsPath, func() { ln, err = net.Listen("tcp4", addr) }); nerr != nil {
		return nil, nerr
	}
	return ln, err
}

// ListenPublic listens on TCP port of addr, a non-private address (e.g.
// from TEST-NET-2, 198.51.100.0/24) that it first adds to the node's
// loopback inside the cluster's namespace: a stand-in for a server on the
// internet, which Pods reach through their default route and nothing
// outside the namespace can.
func (c *Cluster) ListenPublic(addr netip.Addr, port int) (net.Listener, error) {
	if !addr.Is4() || addr.IsPrivate() || addr.IsLoopback() {
		return nil, fmt.Errorf("listen public: %s is not a public IPv4 address", addr)
	}
	if _, err := hostcmd.IP(context.Background(), "-n", filepath.Base(c.NetNS), "addr", "replace", addr.String()+"/32", "dev", "lo"); err != nil {
		return nil, err
	}
	return ListenIn(c.NetNS, netip.AddrPortFrom(addr, uint16(port)).String())
}
