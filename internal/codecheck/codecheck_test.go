package codecheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// sources parses every Go file of the module, test files included.
func sources(t *testing.T) (*token.FileSet, map[string]*ast.File) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	files := map[string]*ast.File{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && p != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 100 {
		t.Fatalf("found only %d Go files under %s: wrong root?", len(files), root)
	}
	return fset, files
}

// TestSkipsGoThroughTestutil: a bare t.Skip would skip in CI too, where a
// missing prerequisite must fail (testutil.Missing, Require*), and a test
// that never runs in CI looks like coverage that is not there.
func TestSkipsGoThroughTestutil(t *testing.T) {
	eachCall(t, "internal/testutil/", func(pos token.Position, call *ast.CallExpr) {
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if ok && (sel.Sel.Name == "Skip" || sel.Sel.Name == "Skipf" || sel.Sel.Name == "SkipNow") {
			if _, isIdent := sel.X.(*ast.Ident); isIdent {
				t.Errorf("%s: %s.%s: skip through testutil (Missing, Require*, NotApplicable, SkipShort)", pos, sel.X, sel.Sel.Name)
			}
		}
	})
}

// eachCall calls fn on every call expression of the module's Go files
// but those under the directory exempt.
func eachCall(t *testing.T, exempt string, fn func(token.Position, *ast.CallExpr)) {
	t.Helper()
	fset, files := sources(t)
	for name, f := range files {
		if strings.HasPrefix(name, exempt) {
			continue
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok {
				fn(fset.Position(call.Pos()), call)
			}
			return true
		})
	}
}

// TestNoReturnReadsWhatACallFills catches `return out, f(&out)`: the Go
// spec orders the calls in a return statement but not the read of out
// relative to them, so out may be returned before f filled it.
func TestNoReturnReadsWhatACallFills(t *testing.T) {
	fset, files := sources(t)
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			ret, ok := n.(*ast.ReturnStmt)
			if !ok {
				return true
			}
			read := map[string]bool{}
			for _, r := range ret.Results {
				if id, ok := r.(*ast.Ident); ok {
					read[id.Name] = true
				}
			}
			for _, r := range ret.Results {
				ast.Inspect(r, func(n ast.Node) bool {
					call, ok := n.(*ast.CallExpr)
					if !ok {
						return true
					}
					for _, a := range call.Args {
						if u, ok := a.(*ast.UnaryExpr); ok && u.Op == token.AND {
							if id, ok := u.X.(*ast.Ident); ok && read[id.Name] {
								t.Errorf("%s: return reads %s while a call in it fills &%s; assign the call's result first", fset.Position(ret.Pos()), id.Name, id.Name)
							}
						}
					}
					return true
				})
			}
			return true
		})
	}
}

// TestNamespacesThroughNettest: a new network namespace copies IPv4
// forwarding from the host's (net.core.devconf_inherit_init_net 0), so a
// test that makes its own starts from whatever banger, or anything else,
// left on the machine. nettest.NewNS resets it; every test namespace
// comes from there.
func TestNamespacesThroughNettest(t *testing.T) {
	eachCall(t, "internal/network/nettest/", func(pos token.Position, call *ast.CallExpr) {
		for i := 0; i+1 < len(call.Args); i++ {
			a, ok1 := call.Args[i].(*ast.BasicLit)
			b, ok2 := call.Args[i+1].(*ast.BasicLit)
			if ok1 && ok2 && a.Value == `"netns"` && b.Value == `"add"` {
				t.Errorf("%s: ip netns add: make test namespaces with nettest.NewNS", pos)
			}
		}
	})
}
