package crashpoint

import (
	"os"
	"os/exec"
	"testing"
)

// TestAt: a crashpoint build dies by SIGKILL at the named point and only
// there; a normal build never does.
func TestAt(t *testing.T) {
	if os.Getenv("CRASHPOINT_CHILD") != "" {
		At("other")
		os.Stdout.WriteString("passed other\n")
		At("here")
		os.Stdout.WriteString("passed here\n")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAt$")
	cmd.Env = append(os.Environ(), "CRASHPOINT_CHILD=1", Env+"=here")
	out, err := cmd.Output()
	ee, _ := err.(*exec.ExitError)
	killed := ee != nil && ee.ProcessState.String() == "signal: killed"
	switch {
	case Enabled && (!killed || string(out) != "passed other\n"):
		t.Errorf("crashpoint build: err %v, output %q; want killed after passing only the other point", err, out)
	case !Enabled && err != nil:
		t.Errorf("normal build died: %v %q", err, out)
	}
}
