package store

// migrations are applied in order; migration N is migrations[N-1]. Never
// edit or reorder a published entry: add a new one.
var migrations = []string{
	// 1: images and kernels.
	`
CREATE TABLE images (
	name         TEXT PRIMARY KEY,
	digest       TEXT NOT NULL,      -- manifest digest, or a banger-made id for local builds
	ref          TEXT NOT NULL,      -- what the user pulled, or the registered file
	source       TEXT NOT NULL,      -- oci | register | debootstrap
	rootfs       TEXT NOT NULL,      -- path of the published ext4
	size_bytes   INTEGER NOT NULL,
	content_bytes INTEGER NOT NULL,
	config_json  TEXT NOT NULL,      -- Env, Entrypoint, Cmd, WorkingDir, User
	kernel       TEXT NOT NULL DEFAULT '',
	created_at   TEXT NOT NULL
);
CREATE INDEX images_digest ON images(digest);
CREATE TABLE image_blobs (
	image  TEXT NOT NULL REFERENCES images(name) ON DELETE CASCADE,
	digest TEXT NOT NULL,
	PRIMARY KEY (image, digest)
);
CREATE TABLE kernels (
	name        TEXT PRIMARY KEY,
	dir         TEXT NOT NULL,
	source      TEXT NOT NULL,
	info_json   TEXT NOT NULL,
	created_at  TEXT NOT NULL
);
`,
	// 2: virtual machines.
	`
CREATE TABLE vms (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE,
	image       TEXT NOT NULL,
	kernel      TEXT NOT NULL,
	engine      TEXT NOT NULL,
	vcpu        INTEGER NOT NULL,
	memory_mib  INTEGER NOT NULL,
	disk_bytes  INTEGER NOT NULL,
	state       TEXT NOT NULL,      -- created | running | stopped | error
	reason      TEXT NOT NULL DEFAULT '',
	dir         TEXT NOT NULL,
	spec_json   TEXT NOT NULL DEFAULT '{}',
	created_at  TEXT NOT NULL,
	started_at  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX vms_image ON vms(image);
`,
	// 3: networking: each VM's mode and address slot; daemon-wide settings
	// such as the subnet chosen on first start.
	`
ALTER TABLE vms ADD COLUMN net TEXT NOT NULL DEFAULT 'none';
ALTER TABLE vms ADD COLUMN net_index INTEGER NOT NULL DEFAULT 0;
CREATE TABLE settings (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
`,
	// 4: port forwards from the host to VMs.
	`
CREATE TABLE forwards (
	vm         TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
	host_addr  TEXT NOT NULL,
	host_port  INTEGER NOT NULL,
	guest_port INTEGER NOT NULL,
	PRIMARY KEY (host_addr, host_port)
);
`,
	// 5: the workspace shipped into a VM (its guest path), if any.
	`ALTER TABLE vms ADD COLUMN workspace TEXT NOT NULL DEFAULT '';`,
	// 6: labels (a JSON object) and the absolute time a VM with a
	// time-to-live is deleted (unix milliseconds, 0 for none).
	`
ALTER TABLE vms ADD COLUMN labels_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE vms ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX vms_expires_at ON vms(expires_at) WHERE expires_at > 0;
`,
}
