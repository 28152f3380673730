package kernel

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHangCorpus(t *testing.T) {
	files, _ := filepath.Glob("/root/.cache/go-build/fuzz/github.com/bangervm/banger/internal/kernel/FuzzStageKernel/*")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lines := strings.SplitN(string(b), "\n", 2)
		s := strings.TrimSpace(lines[1])
		s = strings.TrimSuffix(strings.TrimPrefix(s, "[]byte("), ")")
		data, err := strconv.Unquote(s)
		if err != nil {
			t.Log(f, err)
			continue
		}
		st := time.Now()
		_, _, err = extractVmlinux([]byte(data))
		t.Logf("%s %v %v", filepath.Base(f), time.Since(st), err)
	}
}
