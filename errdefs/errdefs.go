// Package errdefs defines the classes of error that banger reports, so that
// callers on either side of the daemon's socket can branch on what went wrong
// rather than on message text.
//
// Mark an error with its class where the decision is made:
//
//	return fmt.Errorf("image %q: %w", name, errdefs.ErrNotFound)
//
// and test it anywhere with the Is helpers. The api package carries the class
// across the socket as an HTTP status, so errdefs.IsNotFound works on errors
// returned by the client too.
package errdefs

import (
	"errors"
	"fmt"
	"io/fs"
)

// The error classes. Each maps to one HTTP status in package api.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnavailable        = errors.New("unavailable")
	ErrPermissionDenied   = errors.New("permission denied")
	ErrCanceled           = errors.New("canceled")
	ErrVersionMismatch    = errors.New("version mismatch")
)

// IsNotFound reports whether err is of class ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsAlreadyExists reports whether err is of class ErrAlreadyExists.
func IsAlreadyExists(err error) bool { return errors.Is(err, ErrAlreadyExists) }

// IsInvalidArgument reports whether err is of class ErrInvalidArgument.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }

// IsFailedPrecondition reports whether err is of class ErrFailedPrecondition.
func IsFailedPrecondition(err error) bool { return errors.Is(err, ErrFailedPrecondition) }

// IsUnavailable reports whether err is of class ErrUnavailable.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// IsPermissionDenied reports whether err is of class ErrPermissionDenied.
func IsPermissionDenied(err error) bool { return errors.Is(err, ErrPermissionDenied) }

// IsCanceled reports whether err is of class ErrCanceled.
func IsCanceled(err error) bool { return errors.Is(err, ErrCanceled) }

// IsVersionMismatch reports whether err is of class ErrVersionMismatch.
func IsVersionMismatch(err error) bool { return errors.Is(err, ErrVersionMismatch) }

// classError keeps a message and a class together, for errors rebuilt from
// the wire where the original chain is gone.
type classError struct {
	msg   string
	class error
}

func (e *classError) Error() string { return e.msg }
func (e *classError) Unwrap() error { return e.class }

// WithClass returns an error whose text is msg and which matches class under
// errors.Is. A nil class gives a plain error.
func WithClass(msg string, class error) error {
	if class == nil {
		return errors.New(msg)
	}
	return &classError{msg: msg, class: class}
}

// codes names each class on the wire. The order is Classes' order.
var codes = []struct {
	class error
	code  string
}{
	{ErrNotFound, "not_found"},
	{ErrAlreadyExists, "already_exists"},
	{ErrInvalidArgument, "invalid_argument"},
	{ErrFailedPrecondition, "failed_precondition"},
	{ErrUnavailable, "unavailable"},
	{ErrPermissionDenied, "permission_denied"},
	{ErrCanceled, "canceled"},
	{ErrVersionMismatch, "version_mismatch"},
}

// Classes lists every class, for mapping tables that must cover them all.
func Classes() []error {
	out := make([]error, len(codes))
	for i, c := range codes {
		out[i] = c.class
	}
	return out
}

// Code returns the wire name of err's class ("not_found"), or "" when err
// has none. Every protocol banger speaks (the API, the root helper's, the
// guest agent's) carries classes as these codes.
func Code(err error) string {
	for _, c := range codes {
		if errors.Is(err, c.class) {
			return c.code
		}
	}
	return ""
}

// FromCode rebuilds an error received as text msg and class code, so that
// the Is helpers work on it. An empty or unknown code gives a plain error.
// A class's text ("not found") is accepted as its code too: root helpers
// and guest agents built before the codes were shared send that.
func FromCode(code, msg string) error {
	for _, c := range codes {
		if code != "" && (code == c.code || code == c.class.Error()) {
			return WithClass(msg, c.class)
		}
	}
	return WithClass(msg, nil)
}

// Class returns the first class err matches, or nil.
func Class(err error) error {
	for _, c := range Classes() {
		if errors.Is(err, c) {
			return c
		}
	}
	return nil
}

// FromFS marks a file-system error with its class (a missing file is
// ErrNotFound, a permission problem ErrPermissionDenied), keeping the path
// in the message; an error that has a class already keeps it.
func FromFS(err error) error {
	switch {
	case err == nil || Class(err) != nil:
		return err
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: %w", err, ErrNotFound)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %w", err, ErrPermissionDenied)
	}
	return err
}
