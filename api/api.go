// Package api holds the wire types of bangerd's local API, the routes, the
// protocol version and the mapping between error classes and HTTP statuses.
// It is shared by the daemon and by package client, and imports nothing of
// banger but errdefs.
//
// The API is HTTP over a unix socket. Every request carries HeaderVersion;
// a daemon that speaks another version answers 426 with a message naming
// both, so an old CLI and a new daemon fail clearly instead of mis-parsing
// each other. Long operations answer with a stream of JSON lines (Event),
// the last of which is a result or an error.
package api

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/bangervm/banger/errdefs"
)

// Version is the protocol version. Bump it on any incompatible change. It
// is a variable only so tests can build a binary that speaks another one.
var Version = "1"

// HeaderVersion carries the protocol version on every request and response.
const HeaderVersion = "Banger-Api-Version"

// StreamContentType marks a response body of newline-separated Events.
const StreamContentType = "application/x-ndjson"

// Routes, all under the /v1/ prefix.
const (
	PathVersion         = "/v1/version"
	PathImages          = "/v1/images"      // GET list
	PathImage           = "/v1/images/"     // GET, DELETE /v1/images/{name}
	PathImagePull       = "/v1/images-pull" // POST PullImageRequest, stream
	PathImageRegister   = "/v1/images-register"
	PathImagePromote    = "/v1/images-promote"    // POST PromoteImageRequest
	PathImageCache      = "/v1/image-cache"       // GET list
	PathImageCachePrune = "/v1/image-cache-prune" // POST PruneCacheRequest
	PathKernels         = "/v1/kernels"           // GET list
	PathKernel          = "/v1/kernels/"          // GET, DELETE /v1/kernels/{name}
	PathKernelImport    = "/v1/kernels-import"    // POST ImportKernelRequest, stream
	PathKernelPull      = "/v1/kernels-pull"      // POST PullKernelRequest, stream
	PathShutdown        = "/v1/shutdown"          // POST
	PathTemplates       = "/v1/templates"         // GET list
	PathTemplate        = "/v1/templates/"        // DELETE /v1/templates/{id}
	PathTemplatePrune   = "/v1/templates-prune"   // POST
)

// VersionInfo describes a binary.
type VersionInfo struct {
	Version    string `json:"version"`
	Commit     string `json:"commit"`
	BuildTime  string `json:"buildTime"`
	APIVersion string `json:"apiVersion"`
	PID        int    `json:"pid,omitempty"`
	// Operations, from the daemon, are the requests that change
	// something ("POST /v1/vms", an exec session) in flight when it
	// answered: banger update refuses to restart a daemon that is in the
	// middle of one.
	Operations []string `json:"operations,omitempty"`
}

// ImageConfig is the part of an OCI image config that `vm run` uses.
type ImageConfig struct {
	Env        []string `json:"env,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Image is a named root filesystem.
type Image struct {
	Name         string      `json:"name"`
	Digest       string      `json:"digest"`
	Ref          string      `json:"ref"`
	Source       string      `json:"source"` // oci, debootstrap, register or promoted
	RootFS       string      `json:"rootfs"`
	SizeBytes    int64       `json:"sizeBytes"`
	ContentBytes int64       `json:"contentBytes"`
	Kernel       string      `json:"kernel,omitempty"`
	Config       ImageConfig `json:"config"`
	Layers       []string    `json:"layers,omitempty"`
	CreatedAt    time.Time   `json:"createdAt"`
}

// PullImageRequest asks for an OCI ref or a catalog name to become an image.
type PullImageRequest struct {
	Ref       string `json:"ref"`
	Name      string `json:"name,omitempty"`
	SizeBytes int64  `json:"sizeBytes,omitempty"` // 0: content × 1.5, at least 1 GiB
	Kernel    string `json:"kernel,omitempty"`
}

// PromoteImageRequest makes the pulled image Name a local one (source
// "promoted"): pinned to the root filesystem it has now, with its config,
// and never replaced by a later pull. As, when set, promotes a copy under
// that name and leaves Name as it is.
type PromoteImageRequest struct {
	Name string `json:"name"`
	As   string `json:"as,omitempty"`
}

// RegisterImageRequest adopts an existing ext4 file as an image, or
// converts a tar of a whole root filesystem into one (Format tar).
type RegisterImageRequest struct {
	Name   string `json:"name"`
	RootFS string `json:"rootfs"` // absolute path, readable by the daemon
	Kernel string `json:"kernel,omitempty"`
	// Format is RootFSExt4 (or empty) or RootFSTar: a tar applied as a
	// pulled image's single layer, validated as one, and converted.
	Format string `json:"format,omitempty"`
	// Config is the image's config for a tar, which carries none.
	Config ImageConfig `json:"config,omitzero"`
}

// Formats of RegisterImageRequest.RootFS.
const (
	RootFSExt4 = "ext4"
	RootFSTar  = "tar"
)

// CachedBlob is one entry of the layer-blob cache.
type CachedBlob struct {
	Digest    string   `json:"digest"`
	SizeBytes int64    `json:"sizeBytes"`
	Images    []string `json:"images,omitempty"` // images built from it
}

// PruneCacheRequest removes cached blobs: by default those no image was
// built from; with All, every blob.
type PruneCacheRequest struct {
	DryRun bool `json:"dryRun"`
	All    bool `json:"all"`
}

// PruneCacheResult lists what was (or, on a dry run, would be) removed.
type PruneCacheResult struct {
	Removed    []CachedBlob `json:"removed"`
	FreedBytes int64        `json:"freedBytes"`
	DryRun     bool         `json:"dryRun"`
}

// Kernel is a named bootable kernel.
type Kernel struct {
	Name      string    `json:"name"`
	Version   string    `json:"version,omitempty"`
	Format    string    `json:"format"` // elf or bzimage: what the source was
	PVH       bool      `json:"pvh"`
	Source    string    `json:"source"`
	Dir       string    `json:"dir"`
	Vmlinux   string    `json:"vmlinux"`
	BzImage   string    `json:"bzImage,omitempty"`
	Initrd    string    `json:"initrd,omitempty"`
	Modules   []string  `json:"modules,omitempty"`
	SizeBytes int64     `json:"sizeBytes"`
	CreatedAt time.Time `json:"createdAt"`
}

// ImportKernelRequest imports kernel files from the host. Exactly one of
// Kernel or Deb is set.
type ImportKernelRequest struct {
	Name    string `json:"name"`
	Kernel  string `json:"kernel,omitempty"` // vmlinux or bzImage
	Initrd  string `json:"initrd,omitempty"`
	Modules string `json:"modules,omitempty"` // lib/modules/<version> directory
	Deb     string `json:"deb,omitempty"`     // a Debian linux-image .deb
}

// PullKernelRequest fetches a kernel by catalog name or OCI ref.
type PullKernelRequest struct {
	Ref  string `json:"ref"`
	Name string `json:"name,omitempty"`
}

// Event is one line of a streamed response.
type Event struct {
	Type    string `json:"type"`            // EventProgress, EventResult or EventError
	Phase   string `json:"phase,omitempty"` // e.g. resolve, layer, ext4
	Message string `json:"message,omitempty"`
	// Layer progress: which layer of how many, and bytes of it.
	Layer   int   `json:"layer,omitempty"`
	Layers  int   `json:"layers,omitempty"`
	Current int64 `json:"current,omitempty"`
	Total   int64 `json:"total,omitempty"`
	// Result holds the operation's value on the final EventResult.
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// Event types.
const (
	EventProgress = "progress"
	EventResult   = "result"
	EventError    = "error"
)

// Error is the body of every failed response.
type Error struct {
	Message string `json:"message"`
	Class   string `json:"class,omitempty"`
}

var classStatus = map[error]int{
	errdefs.ErrNotFound:           http.StatusNotFound,
	errdefs.ErrAlreadyExists:      http.StatusConflict,
	errdefs.ErrInvalidArgument:    http.StatusBadRequest,
	errdefs.ErrFailedPrecondition: http.StatusPreconditionFailed,
	errdefs.ErrUnavailable:        http.StatusServiceUnavailable,
	errdefs.ErrPermissionDenied:   http.StatusForbidden,
	errdefs.ErrCanceled:           499, // as nginx: client closed request
	errdefs.ErrVersionMismatch:    http.StatusUpgradeRequired,
}

// ErrorFrom turns err into its wire form.
func ErrorFrom(err error) *Error {
	return &Error{Message: err.Error(), Class: errdefs.Code(err)}
}

// Status returns the HTTP status for err's class, 500 when it has none.
func Status(err error) int {
	if s, ok := classStatus[errdefs.Class(err)]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Err rebuilds an error from its wire form, keeping its class so that the
// errdefs.Is helpers work on the client side.
func (e *Error) Err() error {
	return errdefs.FromCode(e.Class, e.Message)
}

// ExitDaemonAlreadyRunning is bangerd's exit status when another daemon
// holds its lock: a CLI that started it waits for that other daemon
// instead of reporting a failure.
const ExitDaemonAlreadyRunning = 3
