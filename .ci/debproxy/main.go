// debproxy serves Debian's archive inside the network namespace of a
// container that has none of its own (.ci/test-installed): it listens on
// -addr there and fetches from deb.debian.org from this side.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"

	"github.com/bangervm/banger/internal/testutil/debarchive"
)

func main() {
	pid := flag.Int("pid", 0, "a process in the container's network namespace")
	addr := flag.String("addr", "127.0.0.1:80", "where to listen in that namespace")
	flag.Parse()
	ln, err := debarchive.ListenInNetns(*pid, *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "debproxy: listen on %s in pid %d's network namespace: %v\n", *addr, *pid, err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "debproxy: %s in pid %d's network namespace serves %s\n", *addr, *pid, debarchive.Upstream)
	fmt.Fprintln(os.Stderr, http.Serve(ln, debarchive.Handler()))
	os.Exit(1)
}
