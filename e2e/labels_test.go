package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestLabelsAndTTL: labels filter vm list and vm prune; a running VM
// whose time-to-live ends is deleted by the daemon (guest killed, logged),
// and one that expires while no daemon runs is deleted by the next.
func TestLabelsAndTTL(t *testing.T) {
	e := newVMEnvWith(t, "")
	t.Cleanup(func() { e.run("vm", "delete", "-f", "brief", "later", "other") })
	type vm struct {
		Name      string
		Labels    map[string]string
		ExpiresAt *time.Time
	}
	show := func(name string) (vm, bool) {
		r := e.run("vm", "show", name, "--json")
		var v vm
		if r.code != 0 {
			return v, false
		}
		testutilJSON(t, r.out, &v)
		return v, true
	}
	names := func(args ...string) string {
		var vs []vm
		testutilJSON(t, e.ok(append([]string{"vm", "list", "--json"}, args...)...), &vs)
		var out []string
		for _, v := range vs {
			out = append(out, v.Name)
		}
		return strings.Join(out, ",")
	}

	e.ok("vm", "create", "--no-start", "--name", "later", "--image", "bb", "--label", "owner=agent-7", "--label", "job=b", "--ttl", "40s")
	e.ok("vm", "create", "--no-start", "--name", "other", "--image", "bb", "--label", "owner=someone")
	e.ok("vm", "run", "-d", "--name", "brief", "--image", "bb", "--label", "owner=agent-7", "--ttl", "3s")

	if v, _ := show("later"); v.Labels["owner"] != "agent-7" || v.Labels["job"] != "b" || v.ExpiresAt == nil {
		t.Errorf("vm show --json: labels %v, expiresAt %v", v.Labels, v.ExpiresAt)
	}
	if out := e.ok("vm", "show", "later"); !strings.Contains(out, "labels:") || !strings.Contains(out, "job=b,owner=agent-7") || !strings.Contains(out, "expires:") {
		t.Errorf("vm show:\n%s", out)
	}
	if got := names("--label", "owner=agent-7", "--label", "job=b"); got != "later" {
		t.Errorf("list owner=agent-7 AND job=b: %q, want later", got)
	}
	if got := names("--label", "owner=nobody"); got != "" {
		t.Errorf("list owner=nobody: %q", got)
	}

	// brief expires while it runs.
	deadline := time.Now().Add(90 * time.Second)
	for _, ok := show("brief"); ok && time.Now().Before(deadline); _, ok = show("brief") {
		time.Sleep(time.Second)
	}
	if _, ok := show("brief"); ok {
		t.Fatalf("vm brief still there 90 s after its 3 s time-to-live\n%s", e.daemonLog())
	}
	if log := e.daemonLog(); !strings.Contains(log, "vm expired") || !strings.Contains(log, "vm deleted") {
		t.Errorf("daemon log does not record the expiry:\n%s", log)
	}

	// prune --label deletes only the VMs labelled so.
	if out := e.ok("vm", "prune", "-f", "--label", "owner=someone"); out != "deleted vm other\n" {
		t.Errorf("prune owner=someone: %q", out)
	}

	// later expires while no daemon runs: the next one deletes it at start.
	v, ok := show("later")
	if !ok {
		t.Fatalf("vm later went before its time-to-live (booting brief took too long?)\n%s", e.daemonLog())
	}
	e.stopDaemon()
	time.Sleep(time.Until(*v.ExpiresAt) + time.Second)
	if got := names(); got != "" {
		t.Errorf("after a daemon restart past the expiry: VMs %q left", got)
	}
}
