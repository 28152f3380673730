package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// qmpTimeout bounds a QMP exchange when the context has no deadline. QEMU's
// QMP socket serves one client at a time, so a stuck peer must not block
// us forever.
const qmpTimeout = 5 * time.Second

// QMPError is an error reply from QEMU.
type QMPError struct {
	Class, Desc string
}

func (e *QMPError) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

// qmpCall connects to the QMP socket at path, negotiates capabilities, runs
// one command and closes the connection; a long-lived connection would lock
// out every other client (QEMU serves one at a time). The reply's "return"
// value is decoded into out when out is non-nil. For quit, the connection
// closing before the reply counts as success.
func qmpCall(ctx context.Context, path, command string, args, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, qmpTimeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	c := &qmpConn{r: bufio.NewReader(conn), w: conn}
	if err := c.greeting(); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	if err := c.execute("qmp_capabilities", nil, nil); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	err = c.execute(command, args, out)
	if command == "quit" && (errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)) {
		err = nil
	}
	if err != nil {
		// The socket deadline is the context's, and may fire a moment
		// before the context itself reports it.
		var ne net.Error
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		} else if errors.As(err, &ne) && ne.Timeout() && !time.Now().Before(dl) {
			err = fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
		}
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	return nil
}

type qmpConn struct {
	r *bufio.Reader
	w io.Writer
}

// qmpMsg is any message QEMU sends: greeting, reply or event.
type qmpMsg struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

func (c *qmpConn) read() (qmpMsg, error) {
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		if len(line) == 0 {
			return qmpMsg{}, err
		}
	}
	var m qmpMsg
	if err := json.Unmarshal(line, &m); err != nil {
		return qmpMsg{}, fmt.Errorf("bad message %q: %w", line, err)
	}
	return m, nil
}

func (c *qmpConn) greeting() error {
	m, err := c.read()
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if m.QMP == nil {
		return errors.New("no QMP greeting")
	}
	return nil
}

// execute sends one command and reads until its reply, skipping events.
func (c *qmpConn) execute(command string, args, out any) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if _, err := c.w.Write(append(b, '\n')); err != nil {
		return err
	}
	for {
		m, err := c.read()
		if err != nil {
			return err
		}
		switch {
		case m.Error != nil:
			return &QMPError{Class: m.Error.Class, Desc: m.Error.Desc}
		case m.Return != nil:
			if out != nil {
				return json.Unmarshal(m.Return, out)
			}
			return nil
		}
		// An event (or a stray greeting); keep reading.
	}
}
