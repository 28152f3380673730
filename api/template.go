package api

import "time"

// Template is a saved guest that VMs of its shape start from instead of
// booting (see banger template list).
type Template struct {
	ID        string    `json:"id"`
	Engine    string    `json:"engine"` // engine/accelerator, e.g. qemu/tcg
	Kernel    string    `json:"kernel"` // the vmlinux it was booted from
	Image     string    `json:"image"`  // the image's root file system
	VCPU      int       `json:"vcpu"`
	MemoryMiB int       `json:"memoryMiB"`
	NIC       bool      `json:"nic"`
	SizeBytes int64     `json:"sizeBytes"` // on disk
	CreatedAt time.Time `json:"createdAt"`
	// LastUsed is when a VM last started from it (else its making): over
	// the cap, the least recently used go first.
	LastUsed time.Time `json:"lastUsed"`
	// CacheMaxBytes is the cap on all templates' disk space
	// (template_cache_max), the same in every entry.
	CacheMaxBytes int64  `json:"cacheMaxBytes"`
	Dir           string `json:"dir"`
}

// PruneTemplatesResult lists the templates prune removed.
type PruneTemplatesResult struct {
	Deleted []string `json:"deleted"`
}
