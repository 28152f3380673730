package dist

import (
	"bytes"
	_ "embed"
	"fmt"
	"regexp"
	"text/template"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/release"
)

// ScriptFile is install.sh's name in a release.
const ScriptFile = "install.sh"

//go:embed install.sh.tmpl
var scriptText string

var scriptTmpl = template.Must(template.New(ScriptFile).Option("missingkey=error").Parse(scriptText))

// ScriptParams is what a release writes into install.sh.
type ScriptParams struct {
	// BaseURL is where the release is served (no trailing slash).
	BaseURL string
	// PublicKey is the PEM the script checks signatures with.
	PublicKey string
	// Version is the release the script is made for: it refuses a
	// manifest whose latest is older.
	Version string
}

// Characters the script takes in a URL: it is written unquoted into a
// parameter expansion.
var scriptURLRE = regexp.MustCompile(`^https?://[A-Za-z0-9._~%/:@-]*[A-Za-z0-9._~%:@-]$`)

// InstallScript renders install.sh for p.
func InstallScript(p ScriptParams) ([]byte, error) {
	if !scriptURLRE.MatchString(p.BaseURL) {
		return nil, fmt.Errorf("release URL %q: want http(s)://host/path with no trailing slash, query or quotes: %w", p.BaseURL, errdefs.ErrInvalidArgument)
	}
	if _, err := release.ParsePublicKey([]byte(p.PublicKey)); err != nil {
		return nil, err
	}
	if _, err := release.ParseVersion(p.Version); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := scriptTmpl.Execute(&b, p); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
