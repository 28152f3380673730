package hostcmd

import (
	"context"
	"io"
)

// GitCmd describes one git invocation.
type GitCmd struct {
	Dir    string    // working directory: the repository (or a directory in it)
	Args   []string  // arguments after "git"
	Env    []string  // extra environment, e.g. GIT_INDEX_FILE=...
	Stdin  io.Reader // optional
	Stdout io.Writer // optional; when set, Git returns no output
}

// gitEnv is set on every git run: never prompt for credentials (there is no
// terminal to answer), and print messages untranslated so errors read the
// same in every log.
var gitEnv = []string{"GIT_TERMINAL_PROMPT=0", "LC_ALL=C"}

// Git runs git and returns its standard output. It is the only place banger
// runs git; callers decide which repository, index and object store a run
// may touch through Dir and Env.
func Git(ctx context.Context, g GitCmd) ([]byte, error) {
	env := append(append([]string(nil), gitEnv...), g.Env...)
	return Run(ctx, Cmd{
		Name:    "git",
		Args:    g.Args,
		Dir:     g.Dir,
		Env:     env,
		Stdin:   g.Stdin,
		Stdout:  g.Stdout,
		Package: "git",
	})
}
