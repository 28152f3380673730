package kubecluster

import (
	"archive/tar"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/bangervm/banger/internal/kube/images"
	"github.com/bangervm/banger/internal/network/nettest"
)

func readCert(t *testing.T, p *pki, name string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(p.path(name + ".crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s.crt: no PEM block", name)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The certificates are what the components check: each chains to the CA
// for its use, the apiserver's names every address clients use, and the
// client certificates carry the identities RBAC and the Node authorizer
// expect.
func TestClusterCerts(t *testing.T) {
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := clusterCerts(p, "n1", nodeIP); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(readCert(t, p, "ca"))
	verify := func(name string, usage x509.ExtKeyUsage, host string) *x509.Certificate {
		t.Helper()
		c := readCert(t, p, name)
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: host}); err != nil {
			t.Errorf("%s for %s: %v", name, host, err)
		}
		return c
	}
	for _, host := range []string{"127.0.0.1", "10.96.0.1", nodeIP.String(), "kubernetes.default.svc.cluster.local"} {
		verify("apiserver", x509.ExtKeyUsageServerAuth, host)
	}
	verify("kubelet-serving", x509.ExtKeyUsageServerAuth, nodeIP.String())
	ids := map[string][2]string{
		"admin":                    {"banger-test-admin", "system:masters"},
		"apiserver-kubelet-client": {"kube-apiserver-kubelet-client", "system:masters"},
		"controller-manager":       {"system:kube-controller-manager", ""},
		"scheduler":                {"system:kube-scheduler", ""},
		"kubelet":                  {"system:node:n1", "system:nodes"},
	}
	for name, id := range ids {
		c := verify(name, x509.ExtKeyUsageClientAuth, "")
		if c.Subject.CommonName != id[0] {
			t.Errorf("%s: CN %q, want %q", name, c.Subject.CommonName, id[0])
		}
		if id[1] != "" && !slices.Equal(c.Subject.Organization, []string{id[1]}) {
			t.Errorf("%s: O %q, want %q", name, c.Subject.Organization, id[1])
		}
	}
	if c := readCert(t, p, "admin"); slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Error("a client certificate can serve")
	}
	for _, f := range []string{"sa.key", "sa.pub"} {
		if _, err := os.Stat(p.path(f)); err != nil {
			t.Error(err)
		}
	}
}

// The images tar holds both images under their names, with busybox and
// its applet links, and the pause image sleeps as PID 1.
func TestWriteImages(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "busybox")
	if err := os.WriteFile(src, []byte("not really busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "images.tar")
	if err := writeImages(tarPath, src); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{PauseImage, BusyboxImage} {
		files := map[string]string{}
		err := images.Walk(tarPath, ref, func(h *tar.Header, r io.Reader) error {
			b, err := io.ReadAll(r)
			files[h.Name] = string(b) + h.Linkname
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if files["bin/busybox"] != "not really busybox" || files["bin/sh"] != "busybox" {
			t.Errorf("%s: layer %v", ref, files)
		}
	}
	tag, err := name.NewTag(PauseImage)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(tarPath, &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.Config.Entrypoint) == 0 || cf.Config.Entrypoint[0] != "/bin/busybox" {
		t.Errorf("pause entrypoint %q", cf.Config.Entrypoint)
	}
}

// The forwarder joins a connection on the host's loopback to a server
// that listens only inside a namespace.
func TestForwarder(t *testing.T) {
	nettest.Require(t)
	ns := nettest.NewNS(t)
	var ln net.Listener
	nettest.Do(t, ns, func() {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	})
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	f, err := forward("/run/netns/"+ns, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := net.Dial("tcp", f.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "ping" {
		t.Fatalf("echo through the forwarder: %q, %v", got, err)
	}
	// The same address on the host's loopback is not the server: only the
	// forwarder reaches into the namespace.
	if hc, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		hc.Close()
		t.Errorf("%s answered on the host's loopback", ln.Addr())
	}
}
