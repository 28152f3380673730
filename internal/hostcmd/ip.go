package hostcmd

import (
	"context"
	"encoding/json"
	"fmt"
)

// IP runs iproute2's ip with args in the caller's network namespace (the
// namespace of the calling OS thread) and returns its standard output.
func IP(ctx context.Context, args ...string) ([]byte, error) {
	return Run(ctx, Cmd{Name: "ip", Args: args, Package: "iproute2"})
}

// IPJSON runs ip -json with args and decodes its output into v.
func IPJSON(ctx context.Context, v any, args ...string) error {
	out, err := IP(ctx, append([]string{"-json"}, args...)...)
	if err != nil {
		return err
	}
	if len(out) == 0 {
		out = []byte("[]")
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("ip -json %v: decode: %w", args, err)
	}
	return nil
}
