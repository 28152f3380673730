package dist

import (
	"crypto/ecdsa"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/release"
)

// Key file names Keygen writes.
const (
	PrivateKeyFile = "key.pem"
	PublicKeyFile  = "key.pub"
)

// Keygen makes a signing key pair in dir: key.pem (PKCS #8, mode 0600) and
// key.pub (PKIX, the form cosign and openssl read). It never overwrites a
// key.
func Keygen(dir string) error {
	k, err := release.GenerateKey()
	if err != nil {
		return err
	}
	priv, err := release.MarshalPrivateKey(k)
	if err != nil {
		return err
	}
	pub, err := release.MarshalPublicKey(&k.PublicKey)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{PrivateKeyFile, priv, 0o600}, {PublicKeyFile, pub, 0o644}} {
		p := filepath.Join(dir, f.name)
		fd, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists: keygen never overwrites a key; pick another --out: %w", p, errdefs.ErrAlreadyExists)
		}
		if err != nil {
			return err
		}
		_, err = fd.Write(f.data)
		if cerr := fd.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", p, err)
		}
	}
	return nil
}

// ReadPrivateKey reads a key Keygen wrote. A key others can read is
// refused: whoever reads it can sign releases.
func ReadPrivateKey(path string) (*ecdsa.PrivateKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("signing key %s has mode %v: others may read it; chmod 600 %s: %w", path, fi.Mode().Perm(), path, errdefs.ErrPermissionDenied)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	k, err := release.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// BuildKey is the form of k's public key compiled into banger
// (buildinfo.UpdateKey): the base64 of its PEM.
func BuildKey(k *ecdsa.PrivateKey) (string, error) {
	pub, err := release.MarshalPublicKey(&k.PublicKey)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(pub), nil
}
