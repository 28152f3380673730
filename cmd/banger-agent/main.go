// Command banger-agent is the guest agent: the /init of every banger VM.
// Build it static (CGO_ENABLED=0); see package agent.
package main

import (
	"os"

	"github.com/bangervm/banger/internal/agent"
)

func main() { os.Exit(agent.Main(os.Args[1:])) }
