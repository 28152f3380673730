package hostcmd

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/bangervm/banger/errdefs"
)

// Systemctl runs systemctl against the system manager, for the few verbs
// banger's system install uses, on units it names.
type Systemctl struct{}

// UnitState is what systemctl show says about a unit.
type UnitState struct {
	Name          string `json:"name"`
	LoadState     string `json:"loadState"`     // loaded, not-found
	ActiveState   string `json:"activeState"`   // active, inactive, failed, activating
	SubState      string `json:"subState"`      // running, dead, ...
	UnitFileState string `json:"unitFileState"` // enabled, disabled, ""
	MainPID       int    `json:"mainPID"`
	// DropIns are drop-in files that amend the unit (and may weaken its
	// hardening).
	DropIns []string `json:"dropIns,omitempty"`
}

// Booted reports whether systemd is the init system here (sd_booted's
// test), which is what systemctl needs.
func Booted() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// SystemctlArgs returns systemctl's arguments for verb on units. It
// refuses verbs banger does not use and unit names systemctl would read
// as options or that are not services.
func SystemctlArgs(verb string, units ...string) ([]string, error) {
	var args []string
	switch verb {
	case "daemon-reload":
		if len(units) > 0 {
			return nil, fmt.Errorf("systemctl daemon-reload takes no units: %w", errdefs.ErrInvalidArgument)
		}
		return []string{verb}, nil
	case "enable", "disable":
		args = []string{verb, "--now"}
	case "restart", "stop", "start":
		args = []string{verb}
	case "show":
		args = []string{verb, "--property=Id,LoadState,ActiveState,SubState,UnitFileState,MainPID,DropInPaths"}
	default:
		return nil, fmt.Errorf("systemctl %q: not a verb banger uses: %w", verb, errdefs.ErrInvalidArgument)
	}
	if len(units) == 0 {
		return nil, fmt.Errorf("systemctl %s: no unit: %w", verb, errdefs.ErrInvalidArgument)
	}
	for _, u := range units {
		if strings.HasPrefix(u, "-") || !strings.HasSuffix(u, ".service") || strings.ContainsAny(u, " \t\n/") {
			return nil, fmt.Errorf("systemctl %s: unit %q: %w", verb, u, errdefs.ErrInvalidArgument)
		}
	}
	return append(append(args, "--"), units...), nil
}

func (Systemctl) run(ctx context.Context, verb string, units ...string) ([]byte, error) {
	args, err := SystemctlArgs(verb, units...)
	if err != nil {
		return nil, err
	}
	return Run(ctx, Cmd{Name: "systemctl", Args: args, Package: "systemd"})
}

// DaemonReload makes systemd read changed unit files.
func (s Systemctl) DaemonReload(ctx context.Context) error {
	_, err := s.run(ctx, "daemon-reload")
	return err
}

// Enable enables and starts units (enable --now).
func (s Systemctl) Enable(ctx context.Context, units ...string) error {
	_, err := s.run(ctx, "enable", units...)
	return err
}

// Disable stops and disables units (disable --now).
func (s Systemctl) Disable(ctx context.Context, units ...string) error {
	_, err := s.run(ctx, "disable", units...)
	return err
}

// Restart restarts units, starting those not running. For Type=notify
// units it returns once they said they are ready.
func (s Systemctl) Restart(ctx context.Context, units ...string) error {
	_, err := s.run(ctx, "restart", units...)
	return err
}

// Show returns the state of unit; a unit systemd does not know is
// LoadState "not-found", not an error.
func (s Systemctl) Show(ctx context.Context, unit string) (UnitState, error) {
	out, err := s.run(ctx, "show", unit)
	if err != nil {
		return UnitState{}, err
	}
	return ParseSystemctlShow(string(out))
}

// ParseSystemctlShow parses systemctl show's Key=Value lines.
func ParseSystemctlShow(out string) (UnitState, error) {
	var st UnitState
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "Id":
			st.Name = v
		case "LoadState":
			st.LoadState = v
		case "ActiveState":
			st.ActiveState = v
		case "SubState":
			st.SubState = v
		case "UnitFileState":
			st.UnitFileState = v
		case "MainPID":
			pid, err := strconv.Atoi(v)
			if err != nil || pid < 0 {
				return UnitState{}, fmt.Errorf("systemctl show: MainPID=%q: %w", v, errdefs.ErrInvalidArgument)
			}
			st.MainPID = pid
		case "DropInPaths":
			st.DropIns = strings.Fields(v)
		}
	}
	if st.Name == "" || st.LoadState == "" {
		return UnitState{}, fmt.Errorf("systemctl show: no Id or LoadState in %q: %w", tail(out, 200), errdefs.ErrInvalidArgument)
	}
	return st, nil
}
