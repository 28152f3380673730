package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bangervm/banger/errdefs"
)

// Image is one named root filesystem.
type Image struct {
	Name         string
	Digest       string
	Ref          string
	Source       string
	RootFS       string
	SizeBytes    int64
	ContentBytes int64
	ConfigJSON   string
	Kernel       string
	CreatedAt    time.Time
	Blobs        []string // layer digests the image was built from
}

// PutImage records img, replacing any image of the same name.
func (s *Store) PutImage(ctx context.Context, img Image) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM images WHERE name = ?`, img.Name); err != nil {
		return fmt.Errorf("put image %s: %w", img.Name, err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO images(name, digest, ref, source, rootfs, size_bytes, content_bytes, config_json, kernel, created_at)
		VALUES (?,?,?,?,?,?,?,?,?,?)`,
		img.Name, img.Digest, img.Ref, img.Source, img.RootFS, img.SizeBytes, img.ContentBytes, img.ConfigJSON, img.Kernel, img.CreatedAt.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return fmt.Errorf("put image %s: %w", img.Name, err)
	}
	for _, b := range img.Blobs {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO image_blobs(image, digest) VALUES (?,?)`, img.Name, b); err != nil {
			return fmt.Errorf("put image %s: %w", img.Name, err)
		}
	}
	return tx.Commit()
}

const imageCols = `name, digest, ref, source, rootfs, size_bytes, content_bytes, config_json, kernel, created_at`

func scanImage(sc interface{ Scan(...any) error }) (Image, error) {
	var img Image
	var created string
	err := sc.Scan(&img.Name, &img.Digest, &img.Ref, &img.Source, &img.RootFS, &img.SizeBytes, &img.ContentBytes, &img.ConfigJSON, &img.Kernel, &created)
	if err != nil {
		return img, err
	}
	img.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	return img, nil
}

// GetImage returns the image called name.
func (s *Store) GetImage(ctx context.Context, name string) (Image, error) {
	img, err := scanImage(s.db.QueryRowContext(ctx, `SELECT `+imageCols+` FROM images WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return img, notFound("image", name)
	}
	if err != nil {
		return img, fmt.Errorf("get image %s: %w", name, err)
	}
	img.Blobs, err = s.imageBlobs(ctx, name)
	return img, err
}

func (s *Store) imageBlobs(ctx context.Context, name string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT digest FROM image_blobs WHERE image = ? ORDER BY digest`, name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ListImages returns every image, by name.
func (s *Store) ListImages(ctx context.Context) ([]Image, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+imageCols+` FROM images ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	defer rows.Close()
	var out []Image
	for rows.Next() {
		img, err := scanImage(rows)
		if err != nil {
			return nil, fmt.Errorf("list images: %w", err)
		}
		out = append(out, img)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Blobs, err = s.imageBlobs(ctx, out[i].Name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DeleteImage removes the record of image name.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM images WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete image %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("image", name)
	}
	return nil
}

// RootFSInUse reports whether any image still points at the rootfs file.
func (s *Store) RootFSInUse(ctx context.Context, rootfs string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM images WHERE rootfs = ?`, rootfs).Scan(&n)
	return n > 0, err
}

// ImageByDigest returns some image built from digest, if one exists.
func (s *Store) ImageByDigest(ctx context.Context, digest string) (Image, error) {
	img, err := scanImage(s.db.QueryRowContext(ctx, `SELECT `+imageCols+` FROM images WHERE digest = ? LIMIT 1`, digest))
	if errors.Is(err, sql.ErrNoRows) {
		return img, notFound("image digest", digest)
	}
	return img, err
}

// ReferencedBlobs returns the set of blob digests some image was built from.
func (s *Store) ReferencedBlobs(ctx context.Context) (map[string][]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT digest, image FROM image_blobs ORDER BY image`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var d, img string
		if err := rows.Scan(&d, &img); err != nil {
			return nil, err
		}
		out[d] = append(out[d], img)
	}
	return out, rows.Err()
}

// Kernel is one named kernel directory.
type Kernel struct {
	Name      string
	Dir       string
	Source    string
	InfoJSON  string
	CreatedAt time.Time
}

// PutKernel records k; a kernel of the same name must not exist.
func (s *Store) PutKernel(ctx context.Context, k Kernel) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO kernels(name, dir, source, info_json, created_at) VALUES (?,?,?,?,?)`,
		k.Name, k.Dir, k.Source, k.InfoJSON, k.CreatedAt.UTC().Format(time.RFC3339Nano))
	if err != nil && strings.Contains(err.Error(), "UNIQUE") {
		return fmt.Errorf("kernel %q: %w", k.Name, errdefs.ErrAlreadyExists)
	}
	if err != nil {
		return fmt.Errorf("put kernel %s: %w", k.Name, err)
	}
	return nil
}

func scanKernel(sc interface{ Scan(...any) error }) (Kernel, error) {
	var k Kernel
	var created string
	if err := sc.Scan(&k.Name, &k.Dir, &k.Source, &k.InfoJSON, &created); err != nil {
		return k, err
	}
	k.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	return k, nil
}

// GetKernel returns the kernel called name.
func (s *Store) GetKernel(ctx context.Context, name string) (Kernel, error) {
	k, err := scanKernel(s.db.QueryRowContext(ctx, `SELECT name, dir, source, info_json, created_at FROM kernels WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return k, notFound("kernel", name)
	}
	return k, err
}

// ListKernels returns every kernel, by name.
func (s *Store) ListKernels(ctx context.Context) ([]Kernel, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, dir, source, info_json, created_at FROM kernels ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", err)
	}
	defer rows.Close()
	var out []Kernel
	for rows.Next() {
		k, err := scanKernel(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteKernel removes the record of kernel name.
func (s *Store) DeleteKernel(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM kernels WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete kernel %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFound("kernel", name)
	}
	return nil
}

// ImagesUsingKernel lists images whose default kernel is name.
func (s *Store) ImagesUsingKernel(ctx context.Context, name string) ([]string, error) {
	return s.names(ctx, `SELECT name FROM images WHERE kernel = ? ORDER BY name`, name)
}
