package vm

import (
	"crypto/rand"
	"encoding/hex"
	"math/big"
)

var adjectives = []string{
	"amber", "bold", "brave", "brisk", "calm", "clever", "cosy", "crisp", "eager", "fancy",
	"gentle", "glad", "happy", "jolly", "keen", "kind", "lively", "lucky", "merry", "mellow",
	"nimble", "proud", "quick", "quiet", "rapid", "shiny", "snug", "solid", "sunny", "swift",
	"tidy", "vivid", "warm", "wise", "witty", "zesty",
}

var nouns = []string{
	"badger", "beaver", "bison", "crane", "dingo", "eagle", "falcon", "ferret", "gecko", "heron",
	"ibis", "jackal", "koala", "lemur", "lynx", "marmot", "newt", "ocelot", "otter", "owl",
	"panda", "puffin", "quail", "raven", "seal", "shrew", "stoat", "tapir", "toucan", "walrus",
	"weasel", "wombat", "yak", "zebra",
}

func pick(list []string) string {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(len(list))))
	if err != nil {
		return list[0]
	}
	return list[n.Int64()]
}

// friendlyName returns a name like "calm-otter".
func friendlyName() string { return pick(adjectives) + "-" + pick(nouns) }

// newID returns a random 11-hex-digit VM id: short enough for the per-VM
// socket paths (AF_UNIX limit) and for the tap name (bgr-<id>, at most the
// 15 bytes Linux allows an interface name), long enough not to collide.
func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])[:11]
}
