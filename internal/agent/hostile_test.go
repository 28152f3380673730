//go:build !hostileagent

package agent

import "testing"

// The hostile test agent must never be in a normal build.
func TestNoHostileAgentInNormalBuild(t *testing.T) {
	if hostile != nil {
		t.Fatal("the hostile agent is compiled in without the hostileagent tag")
	}
}
