// Package sdnotify tells systemd that a Type=notify service is ready, so
// that `systemctl start` (and units ordered after it) wait until the
// service answers rather than until its process exists.
package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// Ready sends READY=1 to $NOTIFY_SOCKET and removes the variable from
// the environment, so that the programs the service runs later do not
// inherit it (systemd logs every message from a pid that is not the main
// one). Outside systemd (no NOTIFY_SOCKET) it does nothing and returns
// nil.
func Ready() error {
	defer os.Unsetenv("NOTIFY_SOCKET")
	return send("READY=1")
}

func send(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	// An abstract socket is named with a leading '@', which Go spells
	// with a NUL.
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	return nil
}
