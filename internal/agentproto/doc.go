// Package agentproto is the protocol between banger's host daemon and
// banger-agent, the process inside every guest: the handshake, the
// multiplexed session, the typed host-side Client and the guest-side Server.
//
// # Transport
//
// The protocol runs over one byte stream: a virtio-serial port today (QEMU
// exposes it on the host as a unix socket), a vsock connection later. The
// serial port shapes the design:
//
//   - The guest can open the port only once and keeps it across host
//     connections; read returns EOF while no host is connected, so the guest
//     polls, and bytes can be left over from an earlier host connection.
//   - The host must never half-close the socket (QEMU would drop the client).
//
// # Handshake
//
// Every connection starts with a three-way handshake of self-delimiting,
// CRC-checked frames (see handshake.go) that both sides find by scanning, so
// stale or garbled bytes ahead of them are skipped:
//
//	host  -> HELLO(version, nonce)   repeated until acknowledged
//	agent -> ACK(version, nonce, agent version)   for every HELLO
//	host  -> GO(nonce)               once, after the first matching ACK
//	agent -> READY(nonce)            then the session starts
//
// The nonce ties the replies to this connection; READY marks the exact byte
// after which the multiplexed session starts, so acknowledgements for
// repeated HELLOs are discarded by the host rather than misread. A host that
// sees another protocol version in ACK stops before GO and reports
// ErrFailedPrecondition; the agent keeps waiting for a compatible host.
//
// # Session
//
// After READY both sides run yamux (hashicorp/yamux) over the stream, the
// host as client. yamux rather than our own framing because operations must
// overlap (a long exec next to a file copy and a health check) and each needs
// its own flow control so a stalled stdin or a slow reader does not block the
// others; yamux gives per-stream windows, keepalives and bounded frames in a
// small, dependency-free package that also runs unchanged over vsock.
//
// Each operation is one yamux stream carrying typed frames (frame.go): a
// request, then operation-specific frames, each at most MaxFrame bytes.
// Cancelling an operation's context closes its stream; the agent treats a
// closed exec stream as a request to kill the process.
//
// When the stream ends (EOF on the guest's port) the agent drops the session
// and waits for the next HELLO, so a host may reconnect at any time, for
// example after a daemon restart.
package agentproto
