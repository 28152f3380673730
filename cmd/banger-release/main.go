// Command banger-release makes banger's signing key, signs files and
// builds a release's files (internal/release/dist). make release runs it;
// the private key stays wherever its holder keeps it, never in the repo.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bangervm/banger/internal/hostcmd"
	"github.com/bangervm/banger/internal/release"
	"github.com/bangervm/banger/internal/release/dist"
)

const usage = `usage:
  banger-release keygen --out DIR          make key.pem (0600) and key.pub in DIR
  banger-release pubkey --key KEY [--build] print KEY's public key (--build: as make release compiles it in)
  banger-release sign --key KEY FILE        write FILE.sig (cosign sign-blob format)
  banger-release build --version vX.Y.Z --key KEY --bin DIR --out DIST --url BASE [--previous-manifest FILE]
                                            the release's files in DIST; FILE.sig must sit beside FILE
Build stamps files with $SOURCE_DATE_EPOCH, else the time of git's HEAD commit.
`

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout)
	var ue usageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "banger-release: %v\n%s", err, usage)
		os.Exit(2)
	case err != nil:
		fmt.Fprintf(os.Stderr, "banger-release: %v\n", err)
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("no command")}
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		dir       = fs.String("out", "", "")
		keyPath   = fs.String("key", "", "")
		version   = fs.String("version", "", "")
		bin       = fs.String("bin", "", "")
		url       = fs.String("url", "", "")
		prev      = fs.String("previous-manifest", "", "")
		buildForm = fs.Bool("build", false, "")
	)
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	need := func(names ...string) error {
		for _, n := range names {
			if fs.Lookup(n).Value.String() == "" {
				return usageError{fmt.Errorf("%s needs --%s", args[0], n)}
			}
		}
		return nil
	}
	switch args[0] {
	case "keygen":
		if err := need("out"); err != nil {
			return err
		}
		if err := dist.Keygen(*dir); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s/%s (keep it secret, out of the repo) and %s/%s\n", *dir, dist.PrivateKeyFile, *dir, dist.PublicKeyFile)
		return nil
	case "pubkey":
		if err := need("key"); err != nil {
			return err
		}
		k, err := dist.ReadPrivateKey(*keyPath)
		if err != nil {
			return err
		}
		if *buildForm {
			s, err := dist.BuildKey(k)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(out, s)
			return err
		}
		pub, err := release.MarshalPublicKey(&k.PublicKey)
		if err == nil {
			_, err = out.Write(pub)
		}
		return err
	case "sign":
		if err := need("key"); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return usageError{errors.New("sign takes one FILE")}
		}
		k, err := dist.ReadPrivateKey(*keyPath)
		if err != nil {
			return err
		}
		return dist.SignFile(k, fs.Arg(0))
	case "build":
		if err := need("version", "key", "bin", "out", "url"); err != nil {
			return err
		}
		k, err := dist.ReadPrivateKey(*keyPath)
		if err != nil {
			return err
		}
		t, err := sourceTime(ctx)
		if err != nil {
			return err
		}
		o := dist.Options{Version: *version, Key: k, BinDir: *bin, OutDir: *dir, BaseURL: strings.TrimSuffix(*url, "/"), Time: t}
		if *prev != "" {
			if o.Previous, err = os.ReadFile(*prev); err != nil {
				return fmt.Errorf("previous manifest: %w", err)
			}
			if o.PreviousSig, err = os.ReadFile(*prev + release.SigSuffix); err != nil {
				return fmt.Errorf("previous manifest's signature: %w", err)
			}
		}
		m, err := dist.Build(o)
		if err != nil {
			return fmt.Errorf("build release %s: %w", *version, err)
		}
		fmt.Fprintf(out, "release %s in %s (%d releases in the manifest): publish its contents at %s\n", m.Latest, *dir, len(m.Releases), o.BaseURL)
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q", args[0])}
}

// sourceTime is the time a release is stamped with: SOURCE_DATE_EPOCH
// (reproducible-builds.org), else the HEAD commit's time.
func sourceTime(ctx context.Context) (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		b, err := hostcmd.Git(ctx, hostcmd.GitCmd{Args: []string{"log", "-1", "--format=%ct"}})
		if err != nil {
			return time.Time{}, fmt.Errorf("no SOURCE_DATE_EPOCH, and no commit time: %w", err)
		}
		s = strings.TrimSpace(string(b))
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since 1970", s)
	}
	return time.Unix(n, 0).UTC(), nil
}
