package release

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/buildinfo"
)

// ErrBadSignature is the class of a signature that does not verify
// (errdefs.ErrPermissionDenied: nothing signed by that key may be used).
var ErrBadSignature = fmt.Errorf("signature does not verify: %w", errdefs.ErrPermissionDenied)

func sha256Sum(b []byte) [32]byte { return sha256.Sum256(b) }

// GenerateKey makes a signing key: ECDSA on P-256, as cosign's.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// MarshalPrivateKey encodes k as PEM "PRIVATE KEY" (PKCS #8).
func MarshalPrivateKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKey decodes a PEM PKCS #8 P-256 key.
func ParsePrivateKey(b []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("private key: want a PEM \"PRIVATE KEY\" block (banger-release keygen makes one): %w", errdefs.ErrInvalidArgument)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("private key: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("private key: want ECDSA P-256: %w", errdefs.ErrInvalidArgument)
	}
	return ek, nil
}

// MarshalPublicKey encodes pub as PEM "PUBLIC KEY" (PKIX), the form cosign
// and openssl read.
func MarshalPublicKey(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublicKey decodes a PEM PKIX P-256 public key.
func ParsePublicKey(b []byte) (*ecdsa.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("public key: want a PEM \"PUBLIC KEY\" block: %w", errdefs.ErrInvalidArgument)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("public key: want ECDSA P-256: %w", errdefs.ErrInvalidArgument)
	}
	return ek, nil
}

// Sign signs data as `cosign sign-blob` does: the base64 of an ASN.1 DER
// ECDSA signature over data's SHA-256.
func Sign(k *ecdsa.PrivateKey, data []byte) ([]byte, error) {
	h := sha256.Sum256(data)
	der, err := ecdsa.SignASN1(rand.Reader, k, h[:])
	if err != nil {
		return nil, err
	}
	return []byte(base64.StdEncoding.EncodeToString(der)), nil
}

// Verify checks sig, as Sign makes it (surrounding white space allowed),
// over data with pub. A signature that does not verify, or is not one at
// all, is ErrBadSignature.
func Verify(pub *ecdsa.PublicKey, data, sig []byte) error {
	if pub == nil {
		return errors.New("verify: no public key")
	}
	if len(sig) > MaxSig {
		return fmt.Errorf("signature of %d bytes: %w", len(sig), ErrBadSignature)
	}
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(sig)))
	if err != nil {
		return fmt.Errorf("signature is not base64: %w", ErrBadSignature)
	}
	h := sha256.Sum256(data)
	if !ecdsa.VerifyASN1(pub, h[:], der) {
		return ErrBadSignature
	}
	return nil
}

// BuiltIn returns the manifest URL and public key compiled into this
// binary (buildinfo.UpdateURL, buildinfo.UpdateKey), or an error of class
// errdefs.ErrFailedPrecondition for a build that has none.
func BuiltIn() (string, *ecdsa.PublicKey, error) {
	if buildinfo.UpdateURL == "" || buildinfo.UpdateKey == "" {
		return "", nil, fmt.Errorf("this banger was not built for updates (no release URL and key compiled in: a development build): update by hand, or install a release with install.sh: %w", errdefs.ErrFailedPrecondition)
	}
	pemBytes, err := base64.StdEncoding.DecodeString(buildinfo.UpdateKey)
	if err != nil {
		return "", nil, fmt.Errorf("compiled-in update key is not base64: %w: %w", err, errdefs.ErrFailedPrecondition)
	}
	pub, err := ParsePublicKey(pemBytes)
	if err != nil {
		return "", nil, fmt.Errorf("compiled-in update key: %w", err)
	}
	return buildinfo.UpdateURL, pub, nil
}
