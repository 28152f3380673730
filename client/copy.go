package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/bangervm/banger/api"
	"github.com/bangervm/banger/errdefs"
)

// archivePath is the archive route of VM ref (see apiserver): GET the tar
// of a guest path, PUT a tar into a guest directory.
func archivePath(ref, guestPath string) string {
	return vmPath(ref, api.ActionArchive) + "?path=" + url.QueryEscape(guestPath)
}

// CopyFromVM streams the guest file tree at path (absolute) as a PAX tar
// whose root entry is the path's base name; symbolic links stay links. A
// missing path is errdefs.ErrNotFound. The caller must close the reader;
// a failure part-way makes Read fail rather than end early.
func (c *Client) CopyFromVM(ctx context.Context, ref, path string) (io.ReadCloser, error) {
	resp, err := c.do(ctx, http.MethodGet, archivePath(ref, path), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// CopyToVM extracts the tar stream tar into the guest directory dir
// (absolute, existing), keeping modes, links, times and ownership. Entries
// must stay inside dir; a hostile one is errdefs.ErrInvalidArgument.
func (c *Client) CopyToVM(ctx context.Context, ref, dir string, tar io.Reader) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://bangerd"+archivePath(ref, dir), tar)
	if err != nil {
		return err
	}
	req.Header.Set(api.HeaderVersion, api.Version)
	req.Header.Set("Content-Type", api.TarContentType)
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %w", errdefs.ErrCanceled, ctx.Err())
		}
		return fmt.Errorf("bangerd at %s: %w", c.socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return decodeError(resp)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}
