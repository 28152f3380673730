package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/network/nettest"
)

// doctorChecks are the checks banger doctor --json must always report,
// by name: a contract for scripts that read it.
var doctorChecks = []string{
	"architecture", "config", "daemon", "socket", "kvm", "engines", "vhost-vsock", "tun",
	"network", "network-tools", "subnet", "dns", "dns-routing", "ssh-config", "state-store", "agents",
	"disk-space", "vm-defaults", "install-drift", "unit-hardening",
}

type doctorCheck struct {
	Name, Status, Detail, Fix string
	Fixed                     bool
}

// doctor runs banger doctor --json with args and returns the checks by
// name, failing the test unless every check is there and the exit status
// is 1 exactly when one failed.
func (e *env) doctor(args ...string) map[string]doctorCheck {
	e.t.Helper()
	r := e.run(append([]string{"doctor", "--json"}, args...)...)
	var list []doctorCheck
	testutilJSON(e.t, r.out, &list)
	by := map[string]doctorCheck{}
	failed := false
	for _, c := range list {
		by[c.Name] = c
		failed = failed || c.Status == "fail"
	}
	for _, n := range doctorChecks {
		if _, ok := by[n]; !ok {
			e.t.Errorf("doctor --json has no %q check: %s", n, r.out)
		}
	}
	if len(list) != len(doctorChecks) {
		e.t.Errorf("doctor --json reports %d checks, want %d", len(list), len(doctorChecks))
	}
	if want := map[bool]int{false: 0, true: 1}[failed]; r.code != want {
		e.t.Errorf("doctor exit %d, want %d (a check failed: %v)\n%s%s", r.code, want, failed, r.out, r.err)
	}
	return by
}

func expectCheck(t *testing.T, c doctorCheck, status, detail string) {
	t.Helper()
	if c.Status != status || !strings.Contains(c.Detail, detail) {
		t.Errorf("%s: %s %q (fix %q), want %s with %q", c.Name, c.Status, c.Detail, c.Fix, status, detail)
	}
}

// doctorHome gives e a home directory of its own, so that no test reads
// or changes the real ~/.ssh/config, and returns it.
func doctorHome(e *env) string {
	home := filepath.Join(e.home, "userhome")
	os.MkdirAll(home, 0o700)
	e.extra = append(e.extra, "HOME="+home)
	return home
}

func TestDoctor(t *testing.T) {
	e := newEnv(t)
	home := doctorHome(e)
	// A DNS port of its own: other daemons on this host may hold the
	// default one.
	e.writeConfig("dns_addr = \"127.0.0.1:0\"\n")

	c := e.doctor()
	expectCheck(t, c["daemon"], "pass", "answers on "+filepath.Join(e.home, "run", "bangerd.sock"))
	expectCheck(t, c["socket"], "pass", "yours and private")
	expectCheck(t, c["state-store"], "pass", "up to date")
	expectCheck(t, c["network"], "warn", "BANGER_NETWORK=off")
	expectCheck(t, c["subnet"], "skip", "host networking is off")
	expectCheck(t, c["dns"], "pass", "answers NXDOMAIN")
	expectCheck(t, c["ssh-config"], "warn", "does not include banger's ssh config")
	// BANGER_HOME wins over a system install of this host, if any.
	expectCheck(t, c["install-drift"], "skip", "not installed as a system service")
	if !strings.Contains(c["network"].Fix, "BANGER_NETWORK") {
		t.Errorf("network fix %q does not say how to turn it on", c["network"].Fix)
	}
	if _, err := os.Stat(filepath.Join(home, ".ssh", "config")); err == nil {
		t.Fatal("doctor without --fix wrote ~/.ssh/config")
	}

	// --fix installs the Include exactly as ssh-config --install does.
	c = e.doctor("--fix")
	if s := c["ssh-config"]; s.Status != "pass" || !s.Fixed {
		t.Errorf("after --fix: %+v, want a fixed pass", s)
	}
	b, _ := os.ReadFile(filepath.Join(home, ".ssh", "config"))
	if !strings.Contains(string(b), "Include "+filepath.Join(e.home, "state", "ssh", "config")) {
		t.Errorf("~/.ssh/config after --fix:\n%s", b)
	}
	c = e.doctor()
	if s := c["ssh-config"]; s.Status != "pass" || s.Fixed {
		t.Errorf("second run: %+v, want a plain pass", s)
	}

	// The table: a row per check, the fix under what is not a pass.
	r := e.run("doctor")
	if !strings.HasPrefix(r.out, "CHECK") || !strings.Contains(r.out, "network         WARN") || !strings.Contains(r.out, "fix: unset BANGER_NETWORK") {
		t.Errorf("doctor table:\n%s", r.out)
	}
}

// TestDoctorNetwork runs doctor against a daemon with host networking on,
// as root inside a network namespace of the test's own.
func TestDoctorNetwork(t *testing.T) {
	nettest.Require(t)
	ns := nettest.NewNS(t)
	e := newEnv(t)
	doctorHome(e)
	e.wrap = []string{"ip", "netns", "exec", ns}
	e.extra = append(e.extra, "BANGER_NETWORK=on")

	c := e.doctor()
	expectCheck(t, c["network"], "pass", "bridge banger0, subnet ")
	expectCheck(t, c["network"], "pass", "root operations in-process")
	// The namespace starts with forwarding off: bangerd turns it on, the
	// FORWARD policy DROP.
	expectCheck(t, c["network"], "pass", "IPv4 forwarding turned on by bangerd, with the iptables FORWARD policy DROP")
	if out, err := nettest.Exec(ns, "iptables", "-w", "-S", "FORWARD"); err != nil || !strings.HasPrefix(out, "-P FORWARD DROP\n") {
		t.Errorf("iptables -S FORWARD in the daemon's namespace: %q, %v; want the policy DROP", out, err)
	}
	expectCheck(t, c["network-tools"], "pass", "ip, iptables and nft found")
	expectCheck(t, c["tun"], "pass", "present")
	expectCheck(t, c["subnet"], "pass", "on banger0 overlaps no other network")
	expectCheck(t, c["dns"], "pass", "127.0.0.1:42069 answers NXDOMAIN")
	// No systemd-resolved runs in the test's namespace.
	expectCheck(t, c["dns-routing"], "warn", "not system-wide")

	// A network that appears after the daemon chose its subnet is a
	// conflict now.
	var subnet string
	if _, after, ok := strings.Cut(c["subnet"].Detail, "subnet "); ok {
		subnet, _, _ = strings.Cut(after, " ")
	}
	if subnet == "" {
		t.Fatalf("no subnet in %q", c["subnet"].Detail)
	}
	nettest.Script(t, ns, `
		link add vpn0 type veth peer name vpn0p
		link set vpn0 up
		route add `+subnet+` dev vpn0 table 100`)
	c = e.doctor()
	expectCheck(t, c["subnet"], "fail", "overlaps "+subnet+" on vpn0")
}
