package testutil

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BusyboxImage is an OCI image of Debian's busybox-static with an image
// config whose env and working dir the tests check.
func BusyboxImage(t testing.TB) v1.Image {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		Require(t, false, "busybox-static at /bin/busybox")
	}
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	entries := []TarEntry{
		{Name: "bin/", Type: '5'}, {Name: "sbin/", Type: '5'}, {Name: "etc/", Type: '5'}, {Name: "root/", Type: '5', Mode: 0o700},
		{Name: "srv/", Type: '5'}, {Name: "tmp/", Type: '5', Mode: 0o1777}, {Name: "dev/", Type: '5'}, {Name: "proc/", Type: '5'},
		{Name: "sys/", Type: '5'}, {Name: "run/", Type: '5'},
		{Name: "bin/busybox", Body: string(bb), Mode: 0o755},
		{Name: "etc/passwd", Body: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"},
		{Name: "etc/group", Body: "root:x:0:\nnogroup:x:65534:\n"},
		{Name: "srv/marker", Body: "from the image\n"},
	}
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" {
			entries = append(entries, TarEntry{Name: "bin/" + a, Type: '2', Linkname: "busybox"})
		}
	}
	return Image(t, v1.Config{
		Env:        []string{"PATH=/bin:/sbin", "GREETING=hello-from-image"},
		Cmd:        []string{"/bin/sh"},
		WorkingDir: "/srv",
	}, Tar(t, entries...))
}
