package install

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/internal/hostcmd"
)

// Status is `banger system status`: what is installed, whether both
// services run and answer, and where the pieces disagree.
type Status struct {
	Install *Record          `json:"install"` // nil: not installed
	CLI     api.VersionInfo  `json:"cli"`     // the banger asking
	Units   []UnitStatus     `json:"units"`
	Daemon  *api.VersionInfo `json:"daemon,omitempty"` // nil: not answering
	// DaemonError says why the daemon did not answer.
	DaemonError     string `json:"daemonError,omitempty"`
	DaemonSocket    string `json:"daemonSocket"`
	HelperSocket    string `json:"helperSocket"`
	HelperAnswering bool   `json:"helperAnswering"`
	HelperError     string `json:"helperError,omitempty"`
	// Drift lists disagreements, each with its fix; empty when all agree.
	Drift []string `json:"drift"`
}

// UnitStatus is one unit's state and whether its file on disk is what
// this banger would write for the install.
type UnitStatus struct {
	hostcmd.UnitState
	File    string `json:"file"`
	Current bool   `json:"current"`
}

// GetStatus gathers the status of the install r, as seen by the CLI build
// cli.
func GetStatus(ctx context.Context, r Record, sd Systemd, cli api.VersionInfo) Status {
	p := r.Paths
	st := Status{Install: &r, CLI: cli, DaemonSocket: p.DaemonSocket(), HelperSocket: p.HelperSocket, Drift: []string{}}
	daemonUnit, helperUnit, err := Units(r)
	if err != nil {
		st.Drift = append(st.Drift, fmt.Sprintf("units cannot be rendered for this install (%v): reinstall (sudo banger system install)", err))
	}
	for _, u := range []struct {
		name, file string
		want       []byte
	}{{HelperUnitName, p.HelperUnit(), helperUnit}, {DaemonUnitName, p.DaemonUnit(), daemonUnit}} {
		us := UnitStatus{File: u.file}
		us.Name = u.name
		if s, err := sd.Show(ctx, u.name); err == nil {
			us.UnitState = s
		} else {
			st.Drift = append(st.Drift, fmt.Sprintf("%s: %v", u.name, err))
		}
		have, err := os.ReadFile(u.file)
		us.Current = err == nil && u.want != nil && bytes.Equal(have, u.want)
		switch {
		case err != nil:
			st.Drift = append(st.Drift, fmt.Sprintf("%s is missing: reinstall (sudo banger system install)", u.file))
		case !us.Current:
			st.Drift = append(st.Drift, fmt.Sprintf("%s differs from what this banger installs: sudo banger system install", u.file))
		}
		if us.ActiveState != "active" {
			st.Drift = append(st.Drift, fmt.Sprintf("%s is %s: journalctl -u %s; sudo systemctl restart %s", u.name, orUnknown(us.ActiveState), u.name, u.name))
		}
		st.Units = append(st.Units, us)
	}
	if err := HelperAnswers(ctx, p.HelperSocket); err != nil {
		st.HelperError = err.Error()
	} else {
		st.HelperAnswering = true
	}
	if v, err := DaemonClient(r).Version(ctx); err != nil {
		st.DaemonError = err.Error()
	} else {
		st.Daemon = &v
		if v.Version != r.Version || v.Commit != r.Commit {
			st.Drift = append(st.Drift, fmt.Sprintf("the daemon runs %s (%s), the install is %s (%s): sudo systemctl restart %s", v.Version, v.Commit, r.Version, r.Commit, DaemonUnitName))
		}
	}
	if cli.Version != r.Version || cli.Commit != r.Commit {
		st.Drift = append(st.Drift, fmt.Sprintf("this banger is %s (%s), the install is %s (%s): install this one with sudo banger system install, or use %s", cli.Version, cli.Commit, r.Version, r.Commit, p.CLI))
	}
	return st
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
