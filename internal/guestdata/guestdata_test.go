package guestdata

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bangervm/banger/internal/agentproto"
	"github.com/bangervm/banger/internal/testutil/endless"
)

const tcpHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

// A listening socket, as /proc/net/tcp prints it.
const listenRow = "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n"

func TestInboundConns(t *testing.T) {
	// /proc/net/tcp of a guest with sshd on :22, a web server on :8080,
	// postgres on 127.0.0.1:5432 and the connections: an ssh session from
	// the host (172.30.0.1), a local client of postgres (both ends on
	// loopback), and an outbound download to 203.113.0.10 (local port 43512, not a
	// listening one).
	tcp := tcpHeader + listenRow +
		`   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 02001EAC:0016 01001EAC:D431 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
   4: 0100007F:1538 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1
   5: 0100007F:C350 0100007F:1538 01 00000000:00000000 00:00000000 00000000     0        0 6 1 0 20 4 30 10 -1
   6: 02001EAC:A9F8 0A0071CB:0050 01 00000000:00000000 00:00000000 00000000     0        0 7 1 0 20 4 30 10 -1
`
	rows, err := ProcNet("tcp", strings.NewReader(tcp), Limits{})
	if err != nil || len(rows) != 7 {
		t.Fatalf("rows = %+v, %v", rows, err)
	}
	if rows[2].State != TCPListen || rows[2].Local.String() != "127.0.0.1:5432" {
		t.Errorf("row 2 = %+v, want listening on 127.0.0.1:5432", rows[2])
	}
	if n := InboundConns(rows); n != 1 {
		t.Errorf("inbound = %d, want 1 (the ssh session)", n)
	}
	// The same ssh session as IPv4-mapped in tcp6, to a server on [::]:22.
	tcp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8 1 0 100 0 0 10 0
   1: 0000000000000000FFFF000002001EAC:0016 0000000000000000FFFF000001001EAC:D431 01 00000000:00000000 00:00000000 00000000     0        0 9 1 0 20 4 30 10 -1
`
	rows6, err := ProcNet("tcp6", strings.NewReader(tcp6), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if n := InboundConns(rows6); n != 1 {
		t.Errorf("inbound over tcp6 = %d, want 1", n)
	}
	if n := InboundConns(append(rows[:3:3], rows[4:]...)); n != 0 {
		t.Errorf("without the ssh session: %d, want 0", n)
	}
}

func TestProcNetAddresses(t *testing.T) {
	tcp := tcpHeader + `   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0200A8C0:0016 0300A8C0:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
`
	rows, err := ProcNet("tcp", strings.NewReader(tcp), Limits{})
	if err != nil || len(rows) != 3 {
		t.Fatalf("rows %+v, %v", rows, err)
	}
	if rows[0].Local.String() != "0.0.0.0:22" || rows[1].Local.String() != "127.0.0.1:8080" || rows[2].Remote.String() != "192.168.0.3" || rows[2].State != TCPEstablished {
		t.Errorf("rows %+v", rows)
	}
	tcp6 := `  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 0A 00000000:00000000
`
	rows, _ = ProcNet("tcp6", strings.NewReader(tcp6), Limits{})
	if len(rows) != 2 || rows[0].Local.String() != "[::]:8080" || rows[1].Local.String() != "[::1]:53" {
		t.Errorf("tcp6 rows %+v", rows)
	}
}

// TestProcNetLimits feeds answers no real guest gives: each must stop
// with a *LimitError after reading about the limit, not run on (the
// readers are endless) or fill memory.
func TestProcNetLimits(t *testing.T) {
	garbage := strings.Repeat("x", 100) + "\n"
	for _, tc := range []struct {
		name  string
		r     io.Reader
		lim   Limits
		limit string
	}{
		{"endless sockets", endless.Lines(tcpHeader, listenRow), Limits{Entries: 1000}, "entries"},
		{"endless sockets, default limits", endless.Lines(tcpHeader, listenRow), Limits{}, ""},
		{"endless garbage lines", endless.Lines(tcpHeader, garbage), Limits{Lines: 1000}, "lines"},
		{"endless bytes in lines", endless.Lines(tcpHeader, garbage), Limits{Bytes: 1 << 16}, "bytes"},
		{"one endless line", endless.Bytes('7'), Limits{}, "bytes per line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := ProcNet("/proc/net/tcp", tc.r, tc.lim)
			var le *LimitError
			if !errors.As(err, &le) || !errors.Is(err, ErrTooLarge) || rows != nil {
				t.Fatalf("got %d rows, %v; want a *LimitError", len(rows), err)
			}
			if tc.limit != "" && le.Limit != tc.limit {
				t.Errorf("limit %q, want %q", le.Limit, tc.limit)
			}
			if !strings.Contains(err.Error(), "/proc/net/tcp") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
	// Exactly at the limits is fine.
	in := tcpHeader + strings.Repeat(listenRow, 10)
	rows, err := ProcNet("tcp", strings.NewReader(in), Limits{Bytes: int64(len(in)), Lines: 11, Entries: 10})
	if err != nil || len(rows) != 10 {
		t.Errorf("at the limits: %d rows, %v", len(rows), err)
	}
}

func stat(busy, idle uint64) string {
	// Two CPUs; busy split over user and system, idle over idle and
	// iowait.
	return "cpu  " + strconv.FormatUint(busy/2, 10) + " 0 " + strconv.FormatUint(busy-busy/2, 10) + " " +
		strconv.FormatUint(idle-10, 10) + " 10 0 0 0 0 0\ncpu0 1 0 1 1 0 0 0 0 0 0\ncpu1 1 0 1 1 0 0 0 0 0 0\nintr 12345\n"
}

func TestProcStat(t *testing.T) {
	parse := func(s string) (CPU, error) { return ProcStat(strings.NewReader(s), Limits{}) }
	a, err := parse(stat(1000, 9000))
	if err != nil || a.CPUs != 2 || a.Busy != 1000 || a.Total != 10000 {
		t.Fatalf("parse = %+v, %v", a, err)
	}
	if _, ok := a.BusyCPUs(CPU{}); ok {
		t.Error("a first sample gave a rate")
	}
	// 2 s on 2 CPUs = 400 ticks at 100 Hz; one CPU busy all along.
	b, _ := parse(stat(1200, 9200))
	if busy, ok := b.BusyCPUs(a); !ok || busy != 1 {
		t.Errorf("one busy CPU: %v %v", busy, ok)
	}
	c, _ := parse(stat(1204, 9596))
	if busy, ok := c.BusyCPUs(b); !ok || busy >= 0.5 {
		t.Errorf("idle: %v %v", busy, ok)
	}
	// After a reboot the counters start again: no rate.
	if _, ok := a.BusyCPUs(c); ok {
		t.Error("counters that went back gave a rate")
	}
	if _, err := parse("intr 1\n"); err == nil {
		t.Error("no cpu lines: no error")
	}
	// A real guest's intr line can be longer than a line may be: it is
	// cut, not an error.
	long := stat(1000, 9000) + "intr" + strings.Repeat(" 0", 5000) + "\nctxt 1\n"
	if s, err := parse(long); err != nil || s != a {
		t.Errorf("with a long intr line: %+v, %v", s, err)
	}
}

func TestProcStatLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    io.Reader
	}{
		{"endless cpus", endless.Lines(stat(1000, 9000), "cpu7 1 0 1 1 0 0 0 0 0 0\n")},
		{"endless lines", endless.Lines(stat(1000, 9000), "ctxt 1\n")},
		{"one endless line", endless.Bytes('1')},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ProcStat(tc.r, Limits{})
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
		})
	}
}

func TestCheckStats(t *testing.T) {
	good := agentproto.Stats{
		MemTotal: 1 << 30, MemAvailable: 1 << 29, Load1: 0.5, Uptime: time.Minute,
		Root:  agentproto.DiskUsage{Path: "/", Total: 100, Used: 10, Free: 90},
		Block: []agentproto.IOCounter{{Name: "vda", In: 1, Out: 2}},
		Net:   []agentproto.IOCounter{{Name: "eth0", In: 1, Out: 2}},
	}
	if err := CheckStats(good); err != nil {
		t.Fatalf("good stats: %v", err)
	}
	many := make([]agentproto.IOCounter, maxStatsDevices+1)
	for _, tc := range []struct {
		name string
		edit func(*agentproto.Stats)
	}{
		{"available over total", func(s *agentproto.Stats) { s.MemAvailable = s.MemTotal + 1 }},
		{"negative load", func(s *agentproto.Stats) { s.Load5 = -1 }},
		{"used over total", func(s *agentproto.Stats) { s.Disk = &agentproto.DiskUsage{Total: 1, Used: 2} }},
		{"too many devices", func(s *agentproto.Stats) { s.Net = many }},
		{"control characters", func(s *agentproto.Stats) { s.Block[0].Name = "vda\x1b[2J" }},
		{"long name", func(s *agentproto.Stats) { s.Net[0].Name = strings.Repeat("n", 100) }},
		{"overflow", func(s *agentproto.Stats) {
			s.Net = []agentproto.IOCounter{{Name: "a", In: 1 << 63}, {Name: "b", In: 1 << 63}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			s.Block = append([]agentproto.IOCounter(nil), good.Block...)
			s.Net = append([]agentproto.IOCounter(nil), good.Net...)
			tc.edit(&s)
			if err := CheckStats(s); err == nil {
				t.Error("accepted")
			}
		})
	}
}

func FuzzProcNet(f *testing.F) {
	f.Add([]byte(tcpHeader + listenRow))
	f.Add([]byte(tcpHeader + "   1: 0000000000000000FFFF000002001EAC:0016 0000000000000000FFFF000001001EAC:D431 01 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		lim := Limits{Bytes: 4096, Lines: 50, Entries: 20}
		rows, err := ProcNet("tcp", bytes.NewReader(b), lim)
		if err != nil && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("unexpected error class: %v", err)
		}
		if len(rows) > lim.Entries {
			t.Fatalf("%d rows over the limit of %d", len(rows), lim.Entries)
		}
		if err == nil && len(b) > int(lim.Bytes) {
			t.Fatalf("%d bytes accepted over the limit of %d", len(b), lim.Bytes)
		}
		InboundConns(rows)
	})
}

func FuzzProcStat(f *testing.F) {
	f.Add([]byte(stat(1000, 9000)))
	f.Add([]byte("cpu 18446744073709551615 1 1 1 1 1 1 1\ncpu0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		lim := Limits{Bytes: 4096, Lines: 50, Entries: 8}
		s, err := ProcStat(bytes.NewReader(b), lim)
		if err == nil && (s.CPUs == 0 || s.CPUs > lim.Entries || s.Busy > s.Total) {
			t.Fatalf("accepted %+v", s)
		}
		if err == nil && len(b) > int(lim.Bytes) {
			t.Fatalf("%d bytes accepted over the limit of %d", len(b), lim.Bytes)
		}
	})
}
