package vm

import (
	"strconv"
	"strings"
	"testing"
)

func TestCountInbound(t *testing.T) {
	// /proc/net/tcp of a guest with sshd on :22, a web server on :8080,
	// postgres on 127.0.0.1:5432 and the connections: an ssh session from
	// the host (172.30.0.1), a local client of postgres (both ends on
	// loopback), and an outbound download to 203.113.0.10 (local port 43512, not a
	// listening one).
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 02001EAC:0016 01001EAC:D431 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
   4: 0100007F:1538 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0 20 4 30 10 -1
   5: 0100007F:C350 0100007F:1538 01 00000000:00000000 00:00000000 00000000     0        0 6 1 0 20 4 30 10 -1
   6: 02001EAC:A9F8 0A0071CB:0050 01 00000000:00000000 00:00000000 00000000     0        0 7 1 0 20 4 30 10 -1
`
	rows, err := procNetRows(strings.NewReader(tcp))
	if err != nil || len(rows) != 7 {
		t.Fatalf("rows = %+v, %v", rows, err)
	}
	if n := countInbound(rows); n != 1 {
		t.Errorf("inbound = %d, want 1 (the ssh session)", n)
	}
	// The same ssh session as IPv4-mapped in tcp6, to a server on [::]:22.
	tcp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8 1 0 100 0 0 10 0
   1: 0000000000000000FFFF000002001EAC:0016 0000000000000000FFFF000001001EAC:D431 01 00000000:00000000 00:00000000 00000000     0        0 9 1 0 20 4 30 10 -1
`
	rows6, err := procNetRows(strings.NewReader(tcp6))
	if err != nil {
		t.Fatal(err)
	}
	if n := countInbound(rows6); n != 1 {
		t.Errorf("inbound over tcp6 = %d, want 1", n)
	}
	if n := countInbound(append(rows[:3:3], rows[4:]...)); n != 0 {
		t.Errorf("without the ssh session: %d, want 0", n)
	}
}

func TestGuestCPU(t *testing.T) {
	stat := func(busy, idle uint64) string {
		// Two CPUs; busy split over user and system, idle over idle and
		// iowait.
		return "cpu  " + strconv.FormatUint(busy/2, 10) + " 0 " + strconv.FormatUint(busy-busy/2, 10) + " " +
			strconv.FormatUint(idle-10, 10) + " 10 0 0 0 0 0\ncpu0 1 0 1 1 0 0 0 0 0 0\ncpu1 1 0 1 1 0 0 0 0 0 0\nintr 12345\n"
	}
	a, err := parseProcStat(stat(1000, 9000))
	if err != nil || a.cpus != 2 || a.busy != 1000 || a.total != 10000 {
		t.Fatalf("parse = %+v, %v", a, err)
	}
	if _, ok := a.busyCPUs(cpuSample{}); ok {
		t.Error("a first sample gave a rate")
	}
	// 2 s on 2 CPUs = 400 ticks at 100 Hz; one CPU busy all along.
	b, _ := parseProcStat(stat(1200, 9200))
	if busy, ok := b.busyCPUs(a); !ok || busy != 1 {
		t.Errorf("one busy CPU: %v %v", busy, ok)
	}
	c, _ := parseProcStat(stat(1204, 9596))
	if busy, ok := c.busyCPUs(b); !ok || busy >= busyCPUs {
		t.Errorf("idle: %v %v", busy, ok)
	}
	// After a reboot the counters start again: no rate.
	if _, ok := a.busyCPUs(c); ok {
		t.Error("counters that went back gave a rate")
	}
	if _, err := parseProcStat("intr 1\n"); err == nil {
		t.Error("no cpu lines: no error")
	}
}
