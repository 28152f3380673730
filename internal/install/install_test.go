package install

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/testutil"
)

func testRecord() Record {
	return Record{
		Version: "v1.2.3", Commit: "abc1234", BuildTime: "2026-12-03T07:00:00Z",
		Owner: Owner{UID: 1000, GID: 1000, Name: "dev", Home: "/home/dev"},
		Paths: DefaultPaths(),
	}
}

func TestRecordRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "install.toml")
	want := testRecord()
	if err := Write(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	want.Schema = Schema
	if got != want {
		t.Fatalf("read back %+v, want %+v", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v, want 0644 (every user's CLI reads it)", fi.Mode().Perm())
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".install.toml.*")); len(m) > 0 {
		t.Fatalf("temporary files left: %v", m)
	}
}

func TestReadRefuses(t *testing.T) {
	dir := t.TempDir()
	if _, err := Read(filepath.Join(dir, "absent.toml")); !errdefs.IsNotFound(err) {
		t.Fatalf("missing record: %v, want not found", err)
	}
	for name, body := range map[string]string{
		"unknown key":   "schema = 1\nbogus = 1\n[owner]\nuid = 1\ngid = 1\nname = \"a\"\nhome = \"/home/a\"\n",
		"other schema":  "schema = 99\n[owner]\nuid = 1\ngid = 1\nname = \"a\"\nhome = \"/home/a\"\n",
		"bad owner":     "schema = 1\n[owner]\nuid = 1\ngid = 1\nname = \"a\\nExecStartPre=/evil\"\nhome = \"/home/a\"\n",
		"relative home": "schema = 1\n[owner]\nuid = 1\ngid = 1\nname = \"a\"\nhome = \"home/a\"\n",
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := Read(p); err == nil {
			t.Errorf("%s: read without error", name)
		}
	}
}

func TestOwnerCheck(t *testing.T) {
	for _, tc := range []struct {
		o  Owner
		ok bool
	}{
		{Owner{UID: 1000, GID: 1000, Name: "dev", Home: "/home/dev"}, true},
		{Owner{UID: 0, GID: 0, Name: "root", Home: "/root"}, true},
		{Owner{UID: 1000, GID: 1000, Name: "Dev Ops", Home: "/home/dev"}, false},
		{Owner{UID: 1000, GID: 1000, Name: "dev", Home: "/home/my dev"}, false},
		{Owner{UID: 1000, GID: 1000, Name: "dev", Home: "/home/dev/../x"}, false},
		{Owner{UID: 1000, GID: 1000, Name: "dev", Home: "/"}, false},
		{Owner{UID: -1, GID: 1000, Name: "dev", Home: "/home/dev"}, false},
	} {
		if err := tc.o.Check(); (err == nil) != tc.ok {
			t.Errorf("%+v: err %v, want ok=%v", tc.o, err, tc.ok)
		}
	}
}

func TestLookupOwnerRoot(t *testing.T) {
	for _, who := range []string{"root", "0"} {
		o, err := LookupOwner(who)
		if err != nil {
			t.Fatal(err)
		}
		if o.UID != 0 || o.Name != "root" {
			t.Fatalf("LookupOwner(%q) = %+v", who, o)
		}
	}
	if _, err := LookupOwner("no-such-user-banger"); !errdefs.IsNotFound(err) {
		t.Fatalf("unknown user: %v, want not found", err)
	}
}

// directives returns a unit's Key=Value lines (comments dropped), in order.
func directives(unit []byte) map[string][]string {
	m := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(unit))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		m[k] = append(m[k], v)
	}
	return m
}

func TestUnits(t *testing.T) {
	daemon, helper, err := Units(testRecord())
	if err != nil {
		t.Fatal(err)
	}
	d, h := directives(daemon), directives(helper)
	for _, c := range []struct {
		unit map[string][]string
		name string
		key  string
		want string
	}{
		{d, "daemon", "User", "dev"},
		{d, "daemon", "ExecStart", "/usr/local/bin/bangerd"},
		{d, "daemon", "Environment", "XDG_RUNTIME_DIR=/run/bangerd"},
		{d, "daemon", "RuntimeDirectory", "bangerd"},
		{d, "daemon", "RuntimeDirectoryMode", "0700"},
		{d, "daemon", "After", "bangerd-root.service network-online.target"},
		{d, "daemon", "CapabilityBoundingSet", ""},
		{d, "daemon", "ProtectHome", "read-only"},
		{d, "daemon", "ReadWritePaths", "-/home/dev/.local/state/banger"},
		{h, "helper", "ExecStart", "/usr/local/bin/bangerd --root-helper --owner 1000 --socket /run/banger/root.sock"},
		{h, "helper", "RuntimeDirectory", "banger"},
		{h, "helper", "RuntimeDirectoryMode", "0755"},
		{h, "helper", "ProtectHome", "yes"},
	} {
		if !contains(c.unit[c.key], c.want) {
			t.Errorf("%s unit: %s=%q, want %q among them", c.name, c.key, c.unit[c.key], c.want)
		}
	}
	for name, u := range map[string]map[string][]string{"daemon": d, "helper": h} {
		// What lets VMs survive a restart or upgrade of either unit.
		for k, v := range map[string]string{
			"KillMode": "process", "RuntimeDirectoryPreserve": "yes", "Type": "notify",
			"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
			"SystemCallArchitectures": "native",
		} {
			if got := u[k]; len(got) != 1 || got[0] != v {
				t.Errorf("%s unit: %s=%q, want exactly %q", name, k, got, v)
			}
		}
		if len(u["RestrictAddressFamilies"]) != 1 {
			t.Errorf("%s unit: no RestrictAddressFamilies", name)
		}
		for _, k := range []string{"ExecStop", "ExecReload", "KillSignal"} {
			if len(u[k]) > 0 {
				t.Errorf("%s unit sets %s=%q: nothing may signal the engines", name, k, u[k])
			}
		}
	}
}

// Where udev made a kvm group, the daemon gets it, so its QEMU can open
// /dev/kvm; where there is none, nothing is named.
func TestUnitsKVMGroup(t *testing.T) {
	r := testRecord()
	daemon, _, err := Units(r)
	if err != nil {
		t.Fatal(err)
	}
	if g := directives(daemon)["SupplementaryGroups"]; len(g) != 0 {
		t.Fatalf("no kvm group: SupplementaryGroups=%q", g)
	}
	r.KVMGroup = "kvm"
	daemon, _, err = Units(r)
	if err != nil {
		t.Fatal(err)
	}
	if g := directives(daemon)["SupplementaryGroups"]; len(g) != 1 || g[0] != "kvm" {
		t.Fatalf("kvm group: SupplementaryGroups=%q, want kvm", g)
	}
	r.KVMGroup = "kvm\nUser=root"
	if _, _, err := Units(r); err == nil {
		t.Fatal("rendered a group name with a newline")
	}
}

// Every capability the helper keeps is explained in a comment of its unit.
func TestHelperCapabilitiesJustified(t *testing.T) {
	_, helper, err := Units(testRecord())
	if err != nil {
		t.Fatal(err)
	}
	caps := directives(helper)["CapabilityBoundingSet"]
	if len(caps) != 1 || caps[0] == "" {
		t.Fatalf("helper CapabilityBoundingSet=%q: want one non-empty list", caps)
	}
	for _, c := range strings.Fields(caps[0]) {
		explained := regexp.MustCompile(`(?m)^#\s+` + c + `\s+\S`)
		if !explained.Match(helper) {
			t.Errorf("capability %s has no comment saying why", c)
		}
	}
}

func TestUnitsRefuse(t *testing.T) {
	for name, mutate := range map[string]func(*Record){
		"owner name with newline":   func(r *Record) { r.Owner.Name = "dev\nUser=root" },
		"helper socket not in /run": func(r *Record) { r.Paths.HelperSocket = "/tmp/root.sock" },
		"daemon runtime inside the helper's": func(r *Record) {
			r.Paths.DaemonRuntime = "/run/banger/d"
		},
		"binary path with a space": func(r *Record) { r.Paths.Daemon = "/opt/my banger/bangerd" },
	} {
		r := testRecord()
		mutate(&r)
		if _, _, err := Units(r); err == nil {
			t.Errorf("%s: rendered", name)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// systemd itself accepts both units: every directive known, every value
// parseable, the executables present.
func TestUnitsVerify(t *testing.T) {
	testutil.RequireTool(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	r := testRecord()
	r.Paths.Daemon = filepath.Join(dir, "bangerd")
	r.Paths.Agent = filepath.Join(dir, "banger-agent")
	r.Paths.CLI = filepath.Join(dir, "banger")
	r.KVMGroup = "kvm"
	// Any executable will do: verify checks that ExecStart's is one.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, r.Paths.Daemon); err != nil {
		t.Fatal(err)
	}
	daemon, helper, err := Units(r)
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{DaemonUnitName: daemon, HelperUnitName: helper} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("systemd-analyze", "verify", "--man=no", filepath.Join(dir, HelperUnitName), filepath.Join(dir, DaemonUnitName))
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestCheckNoDevDaemon(t *testing.T) {
	o := testRecord().Owner
	sock := filepath.Join(t.TempDir(), "bangerd.sock")
	if err := CheckNoDevDaemon(context.Background(), o, []string{sock}); err != nil {
		t.Fatalf("nothing listening: %v", err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := CheckNoDevDaemon(context.Background(), o, []string{"/nonexistent/x.sock", sock}); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "banger daemon stop") {
		t.Fatalf("a daemon listening: %v, want a refusal naming banger daemon stop", err)
	}
	want := []string{"/run/user/1000/banger/bangerd.sock", filepath.Join(os.TempDir(), "banger-1000", "bangerd.sock")}
	if got := DevSockets(o); !reflect.DeepEqual(got, want) {
		t.Fatalf("DevSockets = %v, want %v", got, want)
	}
}

// With Firecracker's jailer, the helper's unit passes the policy and
// relaxes only what the jail and the jailer need; without it, the unit
// stays as tight as before.
func TestUnitsJailer(t *testing.T) {
	r := testRecord()
	r.Jailer, r.Firecracker = "/usr/local/bin/jailer", "/usr/local/bin/firecracker"
	_, helper, err := Units(r)
	if err != nil {
		t.Fatal(err)
	}
	h := directives(helper)
	for k, want := range map[string][]string{
		"ExecStart":             {"/usr/local/bin/bangerd --root-helper --owner 1000 --socket /run/banger/root.sock --jailer /usr/local/bin/jailer --firecracker /usr/local/bin/firecracker --vms /home/dev/.local/state/banger/vms --templates /home/dev/.cache/banger/templates"},
		"ProtectHome":           {"read-only"},
		"ReadWritePaths":        {"-/run/xtables.lock", "/home/dev/.local/state/banger"},
		"RestrictNamespaces":    {"mnt"},
		"ProtectControlGroups":  {"no"},
		"DeviceAllow":           {"/dev/net/tun rwm", "/dev/kvm rwm"},
		"CapabilityBoundingSet": {"CAP_NET_ADMIN CAP_NET_RAW CAP_CHOWN CAP_FOWNER", "CAP_DAC_READ_SEARCH CAP_DAC_OVERRIDE CAP_SYS_ADMIN CAP_SYS_CHROOT CAP_MKNOD CAP_SETUID CAP_SETGID"},
		"NoNewPrivileges":       {"yes"},
	} {
		if got := h[k]; !slices.Equal(got, want) {
			t.Errorf("helper unit with the jailer: %s=%q, want %q", k, got, want)
		}
	}
	if f := h["SystemCallFilter"]; len(f) != 1 || strings.Contains(f[0], "@mount") {
		t.Errorf("SystemCallFilter=%q: want one, allowing @mount", f)
	}
	_, plain, _ := Units(testRecord())
	p := directives(plain)
	if f := p["SystemCallFilter"]; len(f) != 1 || !strings.Contains(f[0], "@mount") || p["RestrictNamespaces"][0] != "yes" || len(p["CapabilityBoundingSet"]) != 1 {
		t.Errorf("helper unit without the jailer: %q %q %q", f, p["RestrictNamespaces"], p["CapabilityBoundingSet"])
	}
	r.Firecracker = ""
	if _, _, err := Units(r); !errdefs.IsInvalidArgument(err) {
		t.Errorf("jailer without firecracker: %v", err)
	}
	r.Firecracker = "/usr/bin/fc\nUser=root"
	if _, _, err := Units(r); !errdefs.IsInvalidArgument(err) {
		t.Errorf("firecracker path with a newline: %v", err)
	}
}

// The helper runs the jailer as root: it refuses one anyone else could
// replace.
func TestCheckRootBinary(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	good := filepath.Join(dir, "jailer")
	os.WriteFile(good, []byte("#!/bin/sh\n"), 0o755)
	if err := CheckRootBinary(good); err != nil {
		t.Fatalf("root's binary in root's directories (under sticky /tmp): %v", err)
	}
	mk := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("#!/bin/sh\n"), mode)
		os.Chmod(p, mode)
		os.Chown(p, uid, -1)
		return p
	}
	owned := filepath.Join(dir, "owned")
	os.Mkdir(owned, 0o755)
	os.Chown(owned, 1000, 1000)
	inOwned := filepath.Join(owned, "jailer")
	os.WriteFile(inOwned, []byte("#!/bin/sh\n"), 0o755)
	link := filepath.Join(dir, "link")
	os.Symlink(good, link)
	for _, tc := range []struct {
		name, path string
		class      error
	}{
		{"user's file", mk("users", 0o755, 1000), errdefs.ErrPermissionDenied},
		{"group-writable", mk("gw", 0o775, 0), errdefs.ErrPermissionDenied},
		{"world-writable", mk("ww", 0o757, 0), errdefs.ErrPermissionDenied},
		{"not executable", mk("noexec", 0o644, 0), errdefs.ErrInvalidArgument},
		{"in a user's directory", inOwned, errdefs.ErrPermissionDenied},
		{"a symlink", link, errdefs.ErrInvalidArgument},
		{"relative", "jailer", errdefs.ErrInvalidArgument},
		{"missing", filepath.Join(dir, "nope"), errdefs.ErrNotFound},
	} {
		if err := CheckRootBinary(tc.path); !errors.Is(err, tc.class) {
			t.Errorf("%s (%s): %v, want %v", tc.name, tc.path, err, tc.class)
		}
	}
}
