// Package crashpoint kills bangerd at named steps of an operation, for the
// tests that prove a daemon killed at any step leaves VMs recoverable.
// Without the crashpoint build tag At compiles to nothing; a bangerd built
// with it (go build -tags crashpoint) dies by SIGKILL at the point named in
// $BANGER_CRASH_AT. Release builds never carry the tag.
package crashpoint

// Env names the point at which a crashpoint build kills itself.
const Env = "BANGER_CRASH_AT"
