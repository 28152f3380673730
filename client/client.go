// Package client is the typed Go client for bangerd's local API. The CLI
// uses it, and so can any program that wants to drive banger.
//
// The zero Client is not usable; make one with New. Every call takes a
// context: cancelling it closes the connection, which cancels the work in
// the daemon (a pull or import in progress is rolled back). Errors keep
// their class across the socket, so errdefs.IsNotFound(err) works.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
	"github.com/bangervm/banger/internal/safesocket"
)

// Client talks to one daemon over its unix socket.
type Client struct {
	socket string
	dial   func(ctx context.Context) (net.Conn, error)
	http   *http.Client
}

// New returns a client for the daemon listening on socket. Before sending
// anything on a connection it checks that the socket and the process
// answering on it belong to this user or root, so a socket another user
// planted is refused (errdefs.ErrPermissionDenied) instead of being told
// what the caller asked for.
func New(socket string) *Client {
	return newClient(socket)
}

// NewFor returns a client for a daemon that runs as uid, such as root's
// CLI talking to a system install's daemon, which runs as its owner: the
// socket and the process answering must be uid's or root's.
func NewFor(socket string, uid int) *Client {
	return newClient(socket, uid)
}

func newClient(socket string, uids ...int) *Client {
	return NewWithDial(socket, func(ctx context.Context) (net.Conn, error) {
		return safesocket.Dial(ctx, socket, uids...)
	})
}

// NewWithDial returns a client that reaches the API through dial, one
// call per connection (a Kubernetes launcher's API is reached through a
// Pod exec). where names the daemon in errors. The connections carry
// HTTP/1.1; the caller's dial is responsible for whom it reaches.
func NewWithDial(where string, dial func(ctx context.Context) (net.Conn, error)) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: where, dial: dial, http: &http.Client{Transport: tr}}
}

// Socket returns the path the client dials.
func (c *Client) Socket() string { return c.socket }

// IsDaemonDown reports whether err means no daemon is listening (as
// opposed to a daemon that answered with an error).
func IsDaemonDown(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func (c *Client) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://bangerd"+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set(api.HeaderVersion, api.Version)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %w", errdefs.ErrCanceled, ctx.Err())
		}
		// A refused socket or peer (safesocket.Dial) says all there is.
		if ue := (*url.Error)(nil); errors.As(err, &ue) && errdefs.Class(ue.Err) != nil {
			return nil, ue.Err
		}
		return nil, fmt.Errorf("bangerd at %s: %w", c.socket, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e api.Error
	if json.Unmarshal(b, &e) == nil && e.Message != "" {
		return e.Err()
	}
	// A daemon too old to know the version header still answers; a
	// non-JSON body is the sign of a peer that is not speaking our API.
	if v := resp.Header.Get(api.HeaderVersion); v != "" && v != api.Version {
		return versionMismatch(v)
	}
	return fmt.Errorf("bangerd: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
}

func versionMismatch(daemon string) error {
	return fmt.Errorf("this banger speaks API v%s but the running bangerd speaks v%s: stop the old daemon (banger daemon stop) and retry: %w",
		api.Version, daemon, errdefs.ErrVersionMismatch)
}

// get, post, stream and decode return a fresh T filled by the call. They
// exist because `return out, c.getJSON(ctx, p, &out)` would leave it to the
// compiler whether out is read before or after the call fills it: the Go
// spec orders function calls in an expression, not variable reads.
func get[T any](ctx context.Context, c *Client, path string) (T, error) {
	var out T
	err := c.getJSON(ctx, path, &out)
	return out, err
}

func post[T any](ctx context.Context, c *Client, path string, in any) (T, error) {
	var out T
	err := c.postJSON(ctx, path, in, &out)
	return out, err
}

func stream[T any](ctx context.Context, c *Client, path string, in any, progress func(api.Event)) (T, error) {
	var out T
	err := c.stream(ctx, path, in, &out, progress)
	return out, err
}

func decode[T any](r io.Reader) (T, error) {
	var out T
	err := json.NewDecoder(r).Decode(&out)
	return out, err
}

func (c *Client) getJSON(ctx context.Context, path string, out any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *Client) postJSON(ctx context.Context, path string, in, out any) error {
	resp, err := c.do(ctx, http.MethodPost, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *Client) delete(ctx context.Context, path string) error {
	resp, err := c.do(ctx, http.MethodDelete, path, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// stream posts in and reads Events until the result, calling progress (if
// not nil) for each progress event, and decodes the result into out.
func (c *Client) stream(ctx context.Context, path string, in, out any, progress func(api.Event)) error {
	resp, err := c.do(ctx, http.MethodPost, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var ev api.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("bangerd stream: %w", err)
		}
		switch ev.Type {
		case api.EventProgress:
			if progress != nil {
				progress(ev)
			}
		case api.EventError:
			if ev.Error == nil {
				return errors.New("bangerd: error event without an error")
			}
			return ev.Error.Err()
		case api.EventResult:
			if out == nil {
				return nil
			}
			return json.Unmarshal(ev.Result, out)
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrCanceled, ctx.Err())
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("bangerd stream: %w", err)
	}
	return fmt.Errorf("bangerd closed the stream without a result: see its log: %w", errdefs.ErrUnavailable)
}

// Version returns the daemon's version. It is also the handshake: a daemon
// speaking another API version fails it with errdefs.ErrVersionMismatch.
func (c *Client) Version(ctx context.Context) (api.VersionInfo, error) {
	var v api.VersionInfo
	err := c.getJSON(ctx, api.PathVersion, &v)
	if err == nil && v.APIVersion != api.Version {
		return v, versionMismatch(v.APIVersion)
	}
	return v, err
}

// Shutdown asks the daemon to exit.
func (c *Client) Shutdown(ctx context.Context) error {
	return c.postJSON(ctx, api.PathShutdown, struct{}{}, nil)
}

// Images lists images.
func (c *Client) Images(ctx context.Context) ([]api.Image, error) {
	return get[[]api.Image](ctx, c, api.PathImages)
}

// Image returns one image by exact name.
func (c *Client) Image(ctx context.Context, name string) (api.Image, error) {
	return get[api.Image](ctx, c, api.PathImage+url.PathEscape(name))
}

// DeleteImage deletes an image by exact name.
func (c *Client) DeleteImage(ctx context.Context, name string) error {
	return c.delete(ctx, api.PathImage+url.PathEscape(name))
}

// PromoteImage makes a pulled image local and pinned (see
// api.PromoteImageRequest).
func (c *Client) PromoteImage(ctx context.Context, req api.PromoteImageRequest) (api.Image, error) {
	var out api.Image
	err := c.postJSON(ctx, api.PathImagePromote, req, &out)
	return out, err
}

// PullImage pulls an OCI ref or catalog name, reporting progress.
func (c *Client) PullImage(ctx context.Context, req api.PullImageRequest, progress func(api.Event)) (api.Image, error) {
	return stream[api.Image](ctx, c, api.PathImagePull, req, progress)
}

// RegisterImage adopts an ext4 file as an image.
func (c *Client) RegisterImage(ctx context.Context, req api.RegisterImageRequest, progress func(api.Event)) (api.Image, error) {
	return stream[api.Image](ctx, c, api.PathImageRegister, req, progress)
}

// Templates lists the VM templates.
func (c *Client) Templates(ctx context.Context) ([]api.Template, error) {
	return get[[]api.Template](ctx, c, api.PathTemplates)
}

// RemoveTemplate deletes a template by id or unique id prefix.
func (c *Client) RemoveTemplate(ctx context.Context, id string) error {
	return c.delete(ctx, api.PathTemplate+url.PathEscape(id))
}

// PruneTemplates removes stale and unfinished templates.
func (c *Client) PruneTemplates(ctx context.Context) (api.PruneTemplatesResult, error) {
	return post[api.PruneTemplatesResult](ctx, c, api.PathTemplatePrune, struct{}{})
}

// ImageCache lists the layer-blob cache.
func (c *Client) ImageCache(ctx context.Context) ([]api.CachedBlob, error) {
	return get[[]api.CachedBlob](ctx, c, api.PathImageCache)
}

// PruneImageCache removes cached blobs.
func (c *Client) PruneImageCache(ctx context.Context, req api.PruneCacheRequest) (api.PruneCacheResult, error) {
	return post[api.PruneCacheResult](ctx, c, api.PathImageCachePrune, req)
}

// Kernels lists kernels.
func (c *Client) Kernels(ctx context.Context) ([]api.Kernel, error) {
	return get[[]api.Kernel](ctx, c, api.PathKernels)
}

// Kernel returns one kernel by exact name.
func (c *Client) Kernel(ctx context.Context, name string) (api.Kernel, error) {
	return get[api.Kernel](ctx, c, api.PathKernel+url.PathEscape(name))
}

// DeleteKernel deletes a kernel by exact name.
func (c *Client) DeleteKernel(ctx context.Context, name string) error {
	return c.delete(ctx, api.PathKernel+url.PathEscape(name))
}

// ImportKernel imports kernel files from the host.
func (c *Client) ImportKernel(ctx context.Context, req api.ImportKernelRequest, progress func(api.Event)) (api.Kernel, error) {
	return stream[api.Kernel](ctx, c, api.PathKernelImport, req, progress)
}

// PullKernel fetches a kernel by catalog name or OCI ref.
func (c *Client) PullKernel(ctx context.Context, req api.PullKernelRequest, progress func(api.Event)) (api.Kernel, error) {
	return stream[api.Kernel](ctx, c, api.PathKernelPull, req, progress)
}
