package firecracker

import (
	"fmt"
	"path/filepath"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/engine/proc"
)

func readState(dir string) (state, error) {
	var st state
	if err := proc.ReadState(dir, StateFile, &st); err != nil {
		return state{}, err
	}
	if st.Engine != Name || st.APISocket == "" || st.APISockArg == "" || st.PIDFile == "" {
		return state{}, fmt.Errorf("%s was not written by the firecracker engine: %w", filepath.Join(dir, StateFile), errdefs.ErrNotFound)
	}
	return st, nil
}

func writeState(dir string, st state) error {
	return proc.WriteJSON(filepath.Join(dir, StateFile), st)
}
