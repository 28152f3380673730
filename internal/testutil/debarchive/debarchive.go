// Package debarchive gives a container with no network of its own Debian's
// archive: a reverse proxy to deb.debian.org, for Debian's archive only,
// listening inside the container's network namespace while it dials out
// from the caller's.
package debarchive

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Upstream is the archive every request goes to.
const Upstream = "deb.debian.org"

// Handler proxies GET and HEAD of /debian/ and /debian-security/ to
// Upstream and refuses everything else.
func Handler() http.Handler {
	upstream := &url.URL{Scheme: "http", Host: Upstream}
	rp := httputil.NewSingleHostReverseProxy(upstream)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if (r.Method != http.MethodGet && r.Method != http.MethodHead) || !(strings.HasPrefix(p, "/debian/") || strings.HasPrefix(p, "/debian-security/")) || strings.Contains(p, "..") {
			http.Error(w, "only Debian's archive", http.StatusForbidden)
			return
		}
		r.Host = upstream.Host
		rp.ServeHTTP(w, r)
	})
}

// ListenInNetns opens a TCP listener in the network namespace of pid. The
// socket keeps its namespace; only the thread that made it switched, and
// that thread is discarded.
func ListenInNetns(pid int, addr string) (net.Listener, error) {
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		// Never unlocked: the thread exits with the goroutine.
		runtime.LockOSThread()
		ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{err: fmt.Errorf("setns into pid %d's network namespace: %w", pid, err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		ch <- res{ln, err}
	}()
	r := <-ch
	return r.ln, r.err
}
