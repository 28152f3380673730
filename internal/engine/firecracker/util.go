package firecracker

import (
	"fmt"
	"os"
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

// touch creates path (0600) if missing, owned by uid:gid unless they are
// negative. Firecracker's logger opens log_path without creating it.
func touch(path string, uid, gid int) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	if uid >= 0 {
		return os.Chown(path, uid, gid)
	}
	return nil
}
