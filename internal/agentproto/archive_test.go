package agentproto

import (
	"bytes"
	"context"
	"path/filepath"
	"testing"

	"github.com/bangervm/banger/errdefs"
)

// WriteTar's archives are extracted, and checked, in internal/untar.

func TestWriteTarMissing(t *testing.T) {
	err := WriteTar(context.Background(), &bytes.Buffer{}, filepath.Join(t.TempDir(), "nope"), "nope")
	if !errdefs.IsNotFound(err) {
		t.Fatalf("err = %v, want NotFound", err)
	}
}
