package hostcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// NFT applies script with nft -f - in the caller's network namespace.
// nft applies a script as one transaction: all of it or none.
func NFT(ctx context.Context, script string) error {
	_, err := Run(ctx, Cmd{Name: "nft", Args: []string{"-f", "-"}, Stdin: strings.NewReader(script), Package: "nftables"})
	return err
}

// NFTJSON runs nft -j with args (a list command) and decodes its output
// into v.
func NFTJSON(ctx context.Context, v any, args ...string) error {
	out, err := Run(ctx, Cmd{Name: "nft", Args: append([]string{"-j"}, args...), Package: "nftables"})
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("nft -j %s: decode: %w", strings.Join(args, " "), err)
	}
	return nil
}

// NFTTableExists reports whether table name of family exists.
func NFTTableExists(ctx context.Context, family, name string) bool {
	_, err := Run(ctx, Cmd{Name: "nft", Args: []string{"list", "table", family, name}, Package: "nftables"})
	return err == nil
}

// NFTSetElems returns the elements of a set whose elements are
// concatenations (type a . b), each as its parts in nft's JSON rendering.
func NFTSetElems(ctx context.Context, family, table, set string) ([][]string, error) {
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := NFTJSON(ctx, &doc, "list", "set", family, table, set); err != nil {
		return nil, err
	}
	var out [][]string
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, raw := range o.Set.Elem {
			parts, err := concatElem(raw)
			if err != nil {
				return nil, fmt.Errorf("set %s %s %s: %w", family, table, set, err)
			}
			out = append(out, parts)
		}
	}
	return out, nil
}

// concatElem decodes one element of a concatenated set: {"concat": [...]},
// or {"elem": {"val": {"concat": [...]}, ...}} when the element carries
// options (a timeout or a comment).
func concatElem(raw json.RawMessage) ([]string, error) {
	var e struct {
		Concat []any `json:"concat"`
		Elem   *struct {
			Val struct {
				Concat []any `json:"concat"`
			} `json:"val"`
		} `json:"elem"`
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("element %s: %w", raw, err)
	}
	c := e.Concat
	if c == nil && e.Elem != nil {
		c = e.Elem.Val.Concat
	}
	if c == nil {
		return nil, fmt.Errorf("element %s: not a concatenation", raw)
	}
	parts := make([]string, len(c))
	for i, p := range c {
		parts[i] = fmt.Sprint(p)
	}
	return parts, nil
}
