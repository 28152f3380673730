# banger: `make` builds the binaries into bin/, `make test` runs every test.
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BUILD_TIME ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
PKG := github.com/bangervm/banger/internal/buildinfo
LDFLAGS := -s -w -X $(PKG).Version=$(VERSION) -X $(PKG).Commit=$(COMMIT) -X $(PKG).BuildTime=$(BUILD_TIME)
PREFIX ?= /usr/local

.PHONY: all build test test-installed test-kube kube-images unit fuzz bench install clean release

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
# The tests run with no BANGER* variable from the shell but the suite's
# own settings (testutil.SuiteSetting): a developer's BANGER_HOME,
# BANGER_NETWORK or BANGER_ROOT_HELPER must not reach the code under test.
SHELL_BANGER := $(foreach v,$(filter BANGER%,$(.VARIABLES)),$(if $(filter environment% command,$(origin $(v))),$(v)))
TEST_ENV := env $(addprefix -u ,$(filter-out BANGER_BIN BANGER_TEST_CACHE BANGER_TEST_RESOLVED BANGER_BENCH_% BANGER_KUBE_%,$(SHELL_BANGER)))

test: build
	$(GO) vet ./...
	# -p 1: the suites boot real guests under software emulation, one at
	# a time each, and a guest under TCG keeps one core busy. The e2e
	# suite (two thirds of the time) runs beside the other packages, so
	# the two cores carry one guest each; the tests are hermetic (no shared
	# names, namespaces, ports or processes), which makes that safe. The
	# e2e output is printed when it ends, so the log reads in order.
	@e2elog=$$(mktemp); \
	$(TEST_ENV) BANGER_BIN=$(CURDIR)/bin $(GO) test -count=1 -timeout 60m ./e2e/ >$$e2elog 2>&1 & e2e=$$!; \
	rc=0; $(TEST_ENV) BANGER_BIN=$(CURDIR)/bin $(GO) test -p 1 -count=1 -timeout 40m $$($(GO) list ./... | grep -v '/e2e$$') || rc=$$?; \
	erc=0; wait $$e2e || erc=$$?; cat $$e2elog; rm -f $$e2elog; \
	echo "make test: packages exit $$rc, e2e exit $$erc"; [ $$rc -eq 0 ] && [ $$erc -eq 0 ]
	# Fuzzing budgets are execution counts (about 10 s each on an idle
	# 2-core machine), not durations: a duration races Go's fuzz
	# coordinator at its deadline and fails with "context deadline
	# exceeded" under load, with no failing input (go.dev/issue/75804;
	# FuzzEscape did so in a CI run).
	$(GO) test -run=NONE -fuzz=^FuzzApply$$ -fuzztime=15000x ./internal/image/flatten
	$(GO) test -run=NONE -fuzz=FuzzApplyDiscard -fuzztime=15000x ./internal/image/flatten
	$(GO) test -run=NONE -fuzz=FuzzStrict -fuzztime=10000x ./internal/untar
	$(GO) test -run=NONE -fuzz=FuzzEscape -fuzztime=40000x ./internal/termtext
	$(GO) test -run=NONE -fuzz=FuzzCheckPatchSyntax -fuzztime=50000x ./internal/workspace
	$(GO) test -run=NONE -fuzz=FuzzProcNet -fuzztime=300000x ./internal/guestdata
	$(GO) test -run=NONE -fuzz=FuzzProcStat -fuzztime=300000x ./internal/guestdata
	$(GO) test -run=NONE -fuzz=FuzzUnpack -fuzztime=15000x ./internal/update

# make test again where banger is installed and running: in a container
# booted with systemd, on an overlay of this machine's root, with a network
# of its own (root; nothing on this machine changes). Not part of .ci/run:
# it takes as long as make test.
test-installed:
	.ci/test-installed

# The Kubernetes test cluster (kube/cluster, internal/testutil/kubecluster):
# builds kube-apiserver, kube-controller-manager, kube-scheduler and kubelet
# once per version (cached under /var/cache/banger-ci/kube), then runs the
# tests tagged kube, which bring a single-node cluster up inside a network
# namespace of their own. Root; the Debian packages come from
# BANGER_CI_KUBE=1 .ci/install-deps. .ci/run runs it after make test (and
# the build beside it).
test-kube: build
	nice -n 19 kube/cluster/build
	$(GO) vet -tags kube ./...
	$(TEST_ENV) BANGER_BIN=$(CURDIR)/bin $(GO) test -tags kube -count=1 -p 1 -timeout 40m ./internal/testutil/kubecluster ./internal/kube/...

# banger.dev/launcher:dev, banger.dev/controller:dev and banger.dev/node:dev
# as one docker-save tar (ctr images import / docker load): KERNEL and
# INITRD are a kernel banger imported (banger kernel show debian-cloud
# --json).
kube-images: build
	$(GO) run ./internal/kube/images/writetar -bin bin -kernel '$(KERNEL)' -initrd '$(INITRD)' -o bin/kube-images.tar

bench: build
	$(GO) test -run=NONE -bench=. -benchtime=1x -timeout 30m ./bench/...

install: build
	install -m 0755 bin/banger bin/bangerd $(PREFIX)/bin/
	install -d $(PREFIX)/lib/banger
	install -m 0755 bin/banger-agent $(PREFIX)/lib/banger/

# make release VERSION=v0.3.1 SIGNING_KEY=/path/key.pem [RELEASE_URL=...]
# [PREVIOUS_MANIFEST=published/manifest.json]: the release's files in
# dist/ (README, "Releases and install.sh"). Reproducible: the same commit
# gives the same tarball, every time stamped with SOURCE_DATE_EPOCH, by
# default the commit's time.
RELEASE_URL ?= https://bangervm.github.io/banger/releases
DIST ?= dist
RELEASE_BIN ?= bin/release
RELEASE_TOOL ?= bin/banger-release
ifeq ($(SOURCE_DATE_EPOCH),)
SOURCE_DATE_EPOCH := $(shell git log -1 --format=%ct 2>/dev/null)
endif
RELEASE_LDFLAGS = -s -w -X $(PKG).Version=$(VERSION) -X $(PKG).Commit=$(COMMIT) \
	-X $(PKG).BuildTime=$(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y-%m-%dT%H:%M:%SZ) \
	-X $(PKG).UpdateURL=$(RELEASE_URL)/manifest.json

release:
	@echo '$(VERSION)' | grep -Eq '^v[0-9]+\.[0-9]+\.[0-9]+$$' || { echo 'make release: VERSION=vX.Y.Z, e.g. make release VERSION=v0.3.1 SIGNING_KEY=/path/key.pem' >&2; exit 2; }
	@test -n '$(SIGNING_KEY)' || { echo 'make release: SIGNING_KEY=/path/key.pem is needed (banger-release keygen makes a key)' >&2; exit 2; }
	@test -n '$(SOURCE_DATE_EPOCH)' || { echo 'make release: no commit time: set SOURCE_DATE_EPOCH' >&2; exit 2; }
	CGO_ENABLED=0 $(GO) build -trimpath -o $(RELEASE_TOOL) ./cmd/banger-release
	key=$$($(RELEASE_TOOL) pubkey --build --key $(SIGNING_KEY)) && \
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(RELEASE_LDFLAGS) -X $(PKG).UpdateKey=$$key" \
		-o $(RELEASE_BIN)/ ./cmd/banger ./cmd/bangerd ./cmd/banger-agent
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(RELEASE_TOOL) build --version $(VERSION) --key $(SIGNING_KEY) \
		--bin $(RELEASE_BIN) --out $(DIST) --url $(RELEASE_URL) $(if $(PREVIOUS_MANIFEST),--previous-manifest $(PREVIOUS_MANIFEST))

clean:
	rm -rf bin
