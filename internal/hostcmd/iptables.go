package hostcmd

import (
	"context"
	"fmt"
	"strings"
)

// IPTables runs iptables -w on table with args in the caller's network
// namespace. Debian's iptables is the nf_tables backend; both work.
func IPTables(ctx context.Context, table string, args ...string) error {
	_, err := Run(ctx, Cmd{Name: "iptables", Args: append([]string{"-w", "-t", table}, args...), Package: "iptables"})
	return err
}

// IPTablesRules lists the rules of chain in table, each as the argument
// list after "-A CHAIN" in iptables -S output, ready to be passed back
// after "-D CHAIN".
func IPTablesRules(ctx context.Context, table, chain string) ([][]string, error) {
	out, err := Run(ctx, Cmd{Name: "iptables", Args: []string{"-w", "-t", table, "-S", chain}, Package: "iptables"})
	if err != nil {
		return nil, err
	}
	var rules [][]string
	for _, line := range strings.Split(string(out), "\n") {
		f, err := SplitIPTablesLine(line)
		if err != nil {
			return nil, fmt.Errorf("iptables -t %s -S %s: %w", table, chain, err)
		}
		if len(f) >= 2 && f[0] == "-A" && f[1] == chain {
			rules = append(rules, f[2:])
		}
	}
	return rules, nil
}

// IPTablesChainExists reports whether chain exists in table.
func IPTablesChainExists(ctx context.Context, table, chain string) bool {
	_, err := Run(ctx, Cmd{Name: "iptables", Args: []string{"-w", "-t", table, "-S", chain, "1"}, Package: "iptables"})
	return err == nil
}

// IPTablesSave returns iptables-save output without its comment lines
// (which carry timestamps) and packet counters, so two dumps compare equal
// when the rules are the same.
func IPTablesSave(ctx context.Context) (string, error) {
	out, err := Run(ctx, Cmd{Name: "iptables-save", Package: "iptables"})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, ":") {
			if i := strings.LastIndex(line, " ["); i > 0 {
				line = line[:i]
			}
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// SplitIPTablesLine splits one line of iptables -S output into arguments.
// iptables quotes an argument with spaces or quotes in double quotes and
// escapes quotes and backslashes inside with a backslash.
func SplitIPTablesLine(line string) ([]string, error) {
	var (
		args  []string
		cur   strings.Builder
		inArg bool
		quote bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			quote = !quote
			inArg = true
		case !quote && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if quote {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

// IPTablesPolicy returns the policy of built-in chain in table: ACCEPT or
// DROP.
func IPTablesPolicy(ctx context.Context, table, chain string) (string, error) {
	out, err := Run(ctx, Cmd{Name: "iptables", Args: []string{"-w", "-t", table, "-S", chain}, Package: "iptables"})
	if err != nil {
		return "", err
	}
	return parsePolicy(string(out), chain)
}

// parsePolicy finds "-P CHAIN POLICY" in iptables -S output.
func parsePolicy(out, chain string) (string, error) {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "-P" && f[1] == chain {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("iptables -S %s: no policy line (is %s a built-in chain?)", chain, chain)
}

// SetIPTablesPolicy sets the policy of built-in chain in table to ACCEPT
// or DROP.
func SetIPTablesPolicy(ctx context.Context, table, chain, policy string) error {
	if policy != "ACCEPT" && policy != "DROP" {
		return fmt.Errorf("iptables policy %q: want ACCEPT or DROP", policy)
	}
	return IPTables(ctx, table, "-P", chain, policy)
}
