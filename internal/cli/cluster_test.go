package cli

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/bangervm/banger/internal/paths"
)

// banger cluster: usage mistakes exit 2; a kubeconfig that cannot be read
// fails before anything is applied, naming it.
func TestClusterCommandErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"cluster", "frob"}, ExitUsage, `unknown command "frob" for "banger cluster"`},
		{[]string{"cluster", "install", "extra"}, ExitUsage, "no arguments"},
		{[]string{"cluster", "uninstall", "--force=maybe"}, ExitUsage, "--force"},
		{[]string{"cluster", "install", "--kubeconfig", missing}, ExitFailure, "kubeconfig: stat " + missing},
		{[]string{"cluster", "uninstall", "--kubeconfig", missing, "--force"}, ExitFailure, "kubeconfig: stat " + missing},
	} {
		io, out, errOut := TestStreams()
		code := Run(&Factory{IO: io, Layout: paths.Under(t.TempDir())}, tt.args)
		if code != tt.code || !strings.Contains(errOut.String(), tt.want) || out.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %d mentioning %q", tt.args, code, out.String(), errOut.String(), tt.code, tt.want)
		}
	}
}
