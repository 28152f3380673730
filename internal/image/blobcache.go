package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/bangervm/banger/errdefs"
)

// blobCache holds compressed layer blobs by digest, shared by every image.
// A blob becomes visible only after its size and digest were checked, it
// was synced, and it was renamed into place: an earlier tool cached a layer
// stream it had opened but never read, and built an empty rootfs from it.
type blobCache struct {
	dir string // <dir>/sha256/<hex>; <dir>/incoming/ holds downloads

	mu      sync.Mutex
	loading map[string]chan struct{} // digest -> closed when its download ends
}

func newBlobCache(dir string) (*blobCache, error) {
	for _, d := range []string{filepath.Join(dir, "sha256"), filepath.Join(dir, "incoming")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("blob cache: %w", err)
		}
	}
	// Downloads cut short by a crash are never resumed.
	entries, _ := os.ReadDir(filepath.Join(dir, "incoming"))
	for _, e := range entries {
		os.Remove(filepath.Join(dir, "incoming", e.Name()))
	}
	return &blobCache{dir: dir, loading: map[string]chan struct{}{}}, nil
}

func (c *blobCache) path(digest string) (string, error) {
	algo, hx, ok := strings.Cut(digest, ":")
	if !ok || algo != "sha256" || len(hx) != 64 {
		return "", fmt.Errorf("blob digest %q: only sha256 digests are supported: %w", digest, errdefs.ErrInvalidArgument)
	}
	if _, err := hex.DecodeString(hx); err != nil {
		return "", fmt.Errorf("blob digest %q: %w", digest, errdefs.ErrInvalidArgument)
	}
	return filepath.Join(c.dir, "sha256", hx), nil
}

// blobReader reads one blob, either from the cache or from the registry
// while it is written to the cache. Commit must be called after the
// consumer is done: it reads what is left, checks size and digest, and
// publishes the blob. Close without Commit discards a download.
type blobReader struct {
	io.Reader
	commit func() (func() error, error)
	verify func() error
	close  func() error
}

// Commit verifies the blob and publishes it in the cache.
func (b *blobReader) Commit() error {
	wait, err := b.CommitAsync()
	if err != nil {
		return err
	}
	return wait()
}

// CommitAsync verifies the blob and returns an error if it does not
// match. Otherwise it publishes the blob (fsync and rename) in the
// background and returns a function that waits for that and returns its
// error; it must be called. The blob is released to other readers only once it is published
// or discarded.
func (b *blobReader) CommitAsync() (func() error, error) { return b.commit() }

// Verify reads the rest of the blob and checks it without caching it: when
// a layer fails to unpack, a corrupt download is the cause to report.
func (b *blobReader) Verify() error { return b.verify() }

// Close discards a download that was not committed.
func (b *blobReader) Close() error { return b.close() }

// open returns a reader for digest. When the blob is not cached, fetch is
// called to stream it from the registry; a download of the same digest
// already under way is waited for instead, so each blob is fetched once.
func (c *blobCache) open(ctx context.Context, digest string, size int64, fetch func() (io.ReadCloser, error)) (*blobReader, error) {
	final, err := c.path(digest)
	if err != nil {
		return nil, err
	}
	for {
		if f, err := os.Open(final); err == nil {
			nop := func() error { return nil }
			return &blobReader{Reader: f, commit: func() (func() error, error) { return nop, nil }, verify: nop, close: f.Close}, nil
		}
		c.mu.Lock()
		wait, busy := c.loading[digest]
		if !busy {
			done := make(chan struct{})
			c.loading[digest] = done
			c.mu.Unlock()
			r, err := c.download(digest, final, size, fetch, func() {
				c.mu.Lock()
				delete(c.loading, digest)
				c.mu.Unlock()
				close(done)
			})
			return r, err
		}
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (c *blobCache) download(digest, final string, size int64, fetch func() (io.ReadCloser, error), release func()) (*blobReader, error) {
	src, err := fetch()
	if err != nil {
		release()
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Join(c.dir, "incoming"), filepath.Base(final)+".*")
	if err != nil {
		src.Close()
		release()
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	h := sha256.New()
	cw := &countWriter{}
	tee := io.TeeReader(src, io.MultiWriter(tmp, h, cw))
	var once sync.Once
	finish := func(publish bool) (err error) {
		once.Do(func() {
			defer release()
			defer src.Close()
			err = check(tee, h, cw, digest, size)
			if err == nil && publish {
				err = c.publish(tmp, digest, final)
			}
			if err != nil || !publish {
				tmp.Close()
				os.Remove(tmp.Name())
			}
		})
		return err
	}
	commit := func() (func() error, error) {
		var wait func() error
		var err error
		once.Do(func() {
			err = check(tee, h, cw, digest, size)
			src.Close()
			if err != nil {
				tmp.Close()
				os.Remove(tmp.Name())
				release()
				return
			}
			done := make(chan error, 1)
			go func() {
				err := c.publish(tmp, digest, final)
				if err != nil {
					tmp.Close()
					os.Remove(tmp.Name())
				}
				release()
				done <- err
			}()
			wait = sync.OnceValue(func() error { return <-done })
		})
		if wait == nil {
			if err == nil {
				err = fmt.Errorf("blob %s: already discarded", digest)
			}
			return nil, err
		}
		return wait, nil
	}
	return &blobReader{Reader: tee,
		commit: commit,
		verify: func() error { return finish(false) },
		close:  func() error { finish(false); return nil },
	}, nil
}

// check reads what is left of a download and compares size and digest
// with the manifest's.
func check(tee io.Reader, h hash.Hash, cw *countWriter, digest string, size int64) error {
	// The consumer stops at the end of the tar archive; the blob may
	// hold padding after it, which the digest covers.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		if strings.Contains(err.Error(), "verifying") {
			return fmt.Errorf("blob %s: content does not match its digest or size (%v): the registry sent corrupt or truncated data", digest, err)
		}
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	if size > 0 && cw.n != size {
		return fmt.Errorf("blob %s: got %d bytes, the manifest says %d: the registry sent a truncated or oversized blob", digest, cw.n, size)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("blob %s: content has digest %s: the registry sent corrupt data", digest, got)
	}
	if cw.n == 0 {
		return fmt.Errorf("blob %s: empty: refusing to cache it", digest)
	}
	return nil
}

func (c *blobCache) publish(tmp *os.File, digest, final string) error {
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("blob %s: %w", digest, err)
	}
	return nil
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// cachedBlob is one file of the cache.
type cachedBlob struct {
	Digest string
	Size   int64
	Path   string
}

func (c *blobCache) list() ([]cachedBlob, error) {
	var out []cachedBlob
	err := filepath.WalkDir(filepath.Join(c.dir, "sha256"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, cachedBlob{Digest: "sha256:" + d.Name(), Size: info.Size(), Path: p})
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	return out, err
}
