package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/bangervm/banger/errdefs"
)

func TestMigrationsAndStatus(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")

	st, err := CheckMigrations(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Pending() || st.Current != 0 {
		t.Fatalf("fresh store: %+v, want pending from 0", st)
	}

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	st, err = CheckMigrations(ctx, path)
	if err != nil || st.Pending() || st.Newer() {
		t.Fatalf("after Open: %+v, %v; want up to date", st, err)
	}

	// Simulate a newer binary having migrated further.
	s, _ = open(path)
	if _, err := s.db.Exec(`INSERT INTO schema_migrations(version) VALUES (?)`, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	st, _ = CheckMigrations(ctx, path)
	if !st.Newer() {
		t.Fatalf("status %+v, want newer", st)
	}
	if _, err := Open(ctx, path); !errors.Is(err, ErrNewerStore) {
		t.Fatalf("Open on newer store: %v, want ErrNewerStore", err)
	}
}

func TestImagesAndKernels(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	img := Image{Name: "dev", Digest: "sha256:aa", Ref: "r/dev:1", Source: "oci", RootFS: "/x/aa.ext4", SizeBytes: 10, ContentBytes: 5, ConfigJSON: "{}", CreatedAt: time.Now(), Blobs: []string{"sha256:b1", "sha256:b2"}}
	if err := s.PutImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetImage(ctx, "dev")
	if err != nil || got.Digest != "sha256:aa" || len(got.Blobs) != 2 {
		t.Fatalf("GetImage = %+v, %v", got, err)
	}
	if _, err := s.GetImage(ctx, "de"); !errdefs.IsNotFound(err) {
		t.Fatalf("prefix lookup: %v, want not found (names match exactly)", err)
	}
	refs, _ := s.ReferencedBlobs(ctx)
	if len(refs) != 2 {
		t.Fatalf("refs = %v", refs)
	}
	if err := s.DeleteImage(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	refs, _ = s.ReferencedBlobs(ctx)
	if len(refs) != 0 {
		t.Fatalf("blobs still referenced after delete: %v", refs)
	}
	if err := s.DeleteImage(ctx, "dev"); !errdefs.IsNotFound(err) {
		t.Fatalf("second delete: %v", err)
	}

	k := Kernel{Name: "k1", Dir: "/k/k1", Source: "file", InfoJSON: "{}", CreatedAt: time.Now()}
	if err := s.PutKernel(ctx, k); err != nil {
		t.Fatal(err)
	}
	if err := s.PutKernel(ctx, k); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("duplicate kernel: %v", err)
	}
}

func TestNetIndexAndSettings(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "banger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	put := func(id string, idx int) {
		if err := s.PutVM(ctx, VM{ID: id, Name: id, Net: "public", NetIndex: idx, State: "created", SpecJSON: "{}", CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	if i, _ := s.FreeNetIndex(ctx); i != 1 {
		t.Errorf("first index %d", i)
	}
	put("a", 1)
	put("b", 2)
	put("c", 4)
	if i, _ := s.FreeNetIndex(ctx); i != 3 {
		t.Errorf("gap not reused: %d", i)
	}
	s.DeleteVM(ctx, "a")
	if i, _ := s.FreeNetIndex(ctx); i != 1 {
		t.Errorf("deleted VM's index not reused: %d", i)
	}
	if v, _ := s.Setting(ctx, "subnet"); v != "" {
		t.Errorf("unset setting %q", v)
	}
	s.SetSetting(ctx, "subnet", "172.30.0.0/24")
	s.SetSetting(ctx, "subnet", "172.30.1.0/24")
	if v, _ := s.Setting(ctx, "subnet"); v != "172.30.1.0/24" {
		t.Errorf("setting %q", v)
	}
}

// Labels and the expiry time are kept in the file: a reopened store (a
// restarted daemon) still knows which VMs are due.
func TestVMLabelsAndExpiry(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, v := range []VM{
		{ID: "a", Name: "a", Labels: map[string]string{"owner": "agent-7", "banger.mcp": "x1"}, ExpiresAt: now.Add(-time.Minute)},
		{ID: "b", Name: "b", ExpiresAt: now.Add(time.Hour)},
		{ID: "c", Name: "c"},
		{ID: "d", Name: "d", ExpiresAt: now.Add(-2 * time.Minute)},
	} {
		v.State, v.SpecJSON, v.CreatedAt = "created", "{}", now
		if err := s.PutVM(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()

	s, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := s.GetVM(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if a.Labels["owner"] != "agent-7" || a.Labels["banger.mcp"] != "x1" || len(a.Labels) != 2 {
		t.Errorf("labels after reopen: %v", a.Labels)
	}
	if a.ExpiresAt.UnixMilli() != now.Add(-time.Minute).UnixMilli() {
		t.Errorf("expiry after reopen: %v, want %v", a.ExpiresAt, now.Add(-time.Minute))
	}
	c, _ := s.GetVM(ctx, "c")
	if c.Labels != nil || !c.ExpiresAt.IsZero() {
		t.Errorf("unlabelled VM without a TTL read back as %v, %v", c.Labels, c.ExpiresAt)
	}
	// An update (a state change) keeps both.
	a.State = "stopped"
	if err := s.UpdateVM(ctx, a); err != nil {
		t.Fatal(err)
	}
	expired, err := s.ExpiredVMs(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, v := range expired {
		ids = append(ids, v.ID)
	}
	if len(ids) != 2 || ids[0] != "d" || ids[1] != "a" {
		t.Errorf("expired = %v, want [d a] (soonest first; b not due, c without TTL)", ids)
	}
	if expired[1].Labels["owner"] != "agent-7" {
		t.Errorf("expired VM lost its labels: %v", expired[1].Labels)
	}
}
