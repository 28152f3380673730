// Package store is banger's state: a SQLite database (pure Go, WAL mode)
// with forward-only, versioned migrations. It records what exists and holds
// no policy: callers decide what may be created or deleted.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/bangervm/banger/errdefs"
)

// ErrNewerStore means the database was written by a newer banger, whose
// schema this binary does not know.
var ErrNewerStore = errors.New("state store was written by a newer banger")

// Store is an open state database. It is safe for concurrent use.
type Store struct {
	db *sql.DB
}

// Open opens (creating if needed) the database at path and applies pending
// migrations. It refuses a database whose schema is newer than this binary.
func Open(ctx context.Context, path string) (*Store, error) {
	s, err := open(path)
	if err != nil {
		return nil, err
	}
	if err := s.migrate(ctx); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// OpenReadOnly opens the existing database at path for reading only,
// without migrating it: for looking at a store whose daemon does not run
// (system uninstall). A missing database is an ErrNotFound error.
func OpenReadOnly(path string) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("state store %s: %w", path, errdefs.ErrNotFound)
		}
		return nil, err
	}
	return openDSN(path, "mode=ro&_pragma=busy_timeout(5000)")
}

func open(path string) (*Store, error) {
	// busy_timeout lets a second process (a CLI reading while the daemon
	// writes, or --check-migrations) wait instead of failing at once.
	return openDSN(path, "_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)")
}

// openDSN opens the database at path with the DSN parameters query.
func openDSN(path, query string) (*Store, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?"+query)
	if err != nil {
		return nil, fmt.Errorf("open state store %s: %w", path, err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open state store %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// MigrationStatus describes how a database's schema relates to this binary's.
type MigrationStatus struct {
	Current int // highest migration applied to the database
	Latest  int // highest migration this binary knows
}

// Pending reports whether migrations remain to be applied.
func (m MigrationStatus) Pending() bool { return m.Current < m.Latest }

// Newer reports whether the database is ahead of this binary.
func (m MigrationStatus) Newer() bool { return m.Current > m.Latest }

// LatestMigration is the highest migration this binary knows.
func LatestMigration() int { return len(migrations) }

// CheckMigrations inspects the database at path without changing it.
func CheckMigrations(ctx context.Context, path string) (MigrationStatus, error) {
	s, err := open(path)
	if err != nil {
		return MigrationStatus{}, err
	}
	defer s.Close()
	cur, err := s.currentVersion(ctx)
	if err != nil {
		return MigrationStatus{}, err
	}
	return MigrationStatus{Current: cur, Latest: LatestMigration()}, nil
}

func (s *Store) currentVersion(ctx context.Context) (int, error) {
	var exists int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_migrations'`).Scan(&exists)
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if exists == 0 {
		return 0, nil
	}
	var v sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return int(v.Int64), nil
}

func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT (datetime('now')))`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	cur, err := s.currentVersion(ctx)
	if err != nil {
		return err
	}
	if cur > len(migrations) {
		return fmt.Errorf("schema version %d, this binary knows up to %d: upgrade banger: %w", cur, len(migrations), ErrNewerStore)
	}
	for v := cur + 1; v <= len(migrations); v++ {
		if err := s.apply(ctx, v, migrations[v-1]); err != nil {
			return err
		}
	}
	return nil
}

// apply runs one migration and records it in the same transaction, so a
// crash leaves the schema either before or after it, never between.
func (s *Store) apply(ctx context.Context, version int, stmts string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migration %d: %w", version, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, stmts); err != nil {
		return fmt.Errorf("migration %d: %w", version, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version) VALUES (?)`, version); err != nil {
		return fmt.Errorf("migration %d: %w", version, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migration %d: %w", version, err)
	}
	return nil
}

func notFound(kind, name string) error {
	return fmt.Errorf("%s %q: %w", kind, name, errdefs.ErrNotFound)
}
