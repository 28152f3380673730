# banger: `make` builds the binaries into bin/, `make test` runs every test.
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BUILD_TIME ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
PKG := github.com/bangervm/banger/internal/buildinfo
LDFLAGS := -s -w -X $(PKG).Version=$(VERSION) -X $(PKG).Commit=$(COMMIT) -X $(PKG).BuildTime=$(BUILD_TIME)
PREFIX ?= /usr/local

.PHONY: all build test unit fuzz bench install clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/...

# The whole suite: unit tests, integration tests on real parts (registry,
# SQLite, mke2fs/debugfs, Debian's kernel package, debootstrap), and short
# fuzz runs of the layer flattener, the extractor of guests' archives, the
# escaping of guest text, the check of patches exported from guests and
# the parsers of what the host reads from guests (guestdata), and the
# unpacking of release tarballs (update).
# Needs the packages in .ci/install-deps.
test: build
	$(GO) vet ./...
	# -p 1: the suites boot real guests under software emulation on two
	# cores; run in parallel they starve each other's guests of CPU.
	BANGER_BIN=$(CURDIR)/bin $(GO) test -p 1 -count=1 -timeout 40m ./...
	$(GO) test -run=NONE -fuzz=FuzzApply -fuzztime=20s ./internal/image/flatten
	$(GO) test -run=NONE -fuzz=FuzzStrict -fuzztime=15s ./internal/untar
	$(GO) test -run=NONE -fuzz=FuzzEscape -fuzztime=10s ./internal/termtext
	$(GO) test -run=NONE -fuzz=FuzzCheckPatchSyntax -fuzztime=10s ./internal/workspace
	$(GO) test -run=NONE -fuzz=FuzzProcNet -fuzztime=10s ./internal/guestdata
	$(GO) test -run=NONE -fuzz=FuzzProcStat -fuzztime=10s ./internal/guestdata
	$(GO) test -run=NONE -fuzz=FuzzUnpack -fuzztime=10s ./internal/update

bench: build
	$(GO) test -run=NONE -bench=. -benchtime=1x -timeout 30m ./bench/...

install: build
	install -m 0755 bin/banger bin/bangerd $(PREFIX)/bin/
	install -d $(PREFIX)/lib/banger
	install -m 0755 bin/banger-agent $(PREFIX)/lib/banger/

clean:
	rm -rf bin
