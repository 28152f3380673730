package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// agentVsockPort is the guest agent's vsock port (agentproto.VsockPort):
// the only port the bridge can reach.
const agentVsockPort = 1024

// firstHostPort is where Firecracker starts numbering the host side of
// host-initiated connections.
const firstHostPort = 1 << 30

// connectTimeout bounds how long a host connection may take to send its
// CONNECT line.
const connectTimeout = 5 * time.Second

// bridge serves Firecracker's hybrid vsock protocol on uds_path: a host
// connects, sends "CONNECT <port>\n", gets "OK <host port>\n" and then talks
// to the guest. QEMU here has no vhost-vsock, so the guest side is the
// agent's virtio-serial port (a unix socket QEMU serves): port 1024 is
// proxied there, one host connection at a time; other ports, or a second
// connection, are closed as Firecracker closes a connection to a port no
// guest listener accepts.
type bridge struct {
	path  string
	ln    net.Listener
	agent func() string // the serial port's socket, "" before boot
	log   *logger

	mu       sync.Mutex
	active   bool
	nextPort uint32
	closed   bool
	conns    map[net.Conn]struct{}
}

func listenBridge(path string, agent func() string, log *logger) (*bridge, error) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	b := &bridge{path: path, ln: ln, agent: agent, log: log, nextPort: firstHostPort, conns: map[net.Conn]struct{}{}}
	go b.serve()
	return b, nil
}

// close stops listening, removes the socket and drops open connections.
func (b *bridge) close() {
	b.mu.Lock()
	b.closed = true
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.ln.Close() // removes the socket file (net.UnixListener unlinks on close)
}

func (b *bridge) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		go b.handle(c)
	}
}

func (b *bridge) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *bridge) untrack(c net.Conn) {
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
}

// parseConnect parses "CONNECT <port>" (without the newline).
func parseConnect(line string) (uint32, error) {
	cmd, arg, ok := strings.Cut(strings.TrimRight(line, "\r"), " ")
	if !ok || cmd != "CONNECT" {
		return 0, fmt.Errorf("not a CONNECT command: %q", line)
	}
	p, err := strconv.ParseUint(strings.TrimSpace(arg), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bad port in %q", line)
	}
	return uint32(p), nil
}

func (b *bridge) handle(host net.Conn) {
	if !b.track(host) {
		host.Close()
		return
	}
	defer b.untrack(host)
	defer host.Close()

	host.SetReadDeadline(time.Now().Add(connectTimeout))
	br := bufio.NewReaderSize(host, 64)
	line, err := br.ReadString('\n')
	if err != nil {
		b.log.Warn("vsock: no CONNECT command: " + err.Error())
		return
	}
	port, err := parseConnect(strings.TrimSuffix(line, "\n"))
	if err != nil {
		b.log.Warn("vsock: " + err.Error())
		return
	}
	host.SetReadDeadline(time.Time{})
	if port != agentVsockPort {
		b.log.Info(fmt.Sprintf("vsock: no guest listener on port %d", port))
		return
	}
	sock := b.agent()
	if sock == "" {
		b.log.Info("vsock: guest not started")
		return
	}
	b.mu.Lock()
	if b.active {
		b.mu.Unlock()
		b.log.Info("vsock: refusing a second connection to port 1024 (one at a time)")
		return
	}
	b.active = true
	hostPort := b.nextPort
	b.nextPort++
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.active = false
		b.mu.Unlock()
	}()

	guest, err := net.Dial("unix", sock)
	if err != nil {
		b.log.Warn("vsock: agent port: " + err.Error())
		return
	}
	if !b.track(guest) {
		guest.Close()
		return
	}
	defer b.untrack(guest)
	if _, err := fmt.Fprintf(host, "OK %d\n", hostPort); err != nil {
		guest.Close()
		return
	}
	proxy(host, br, guest)
}

// proxy copies both ways until either side ends, then closes both. It never
// half-closes the guest side: QEMU's chardev would drop the client and the
// guest's replies with it.
func proxy(host net.Conn, hostR io.Reader, guest net.Conn) {
	var once sync.Once
	stop := func() {
		once.Do(func() {
			host.Close()
			guest.Close()
		})
	}
	done := make(chan struct{})
	go func() {
		io.Copy(host, guest)
		stop()
		close(done)
	}()
	io.Copy(guest, hostR)
	stop()
	<-done
}
