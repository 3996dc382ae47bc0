# storagetapper — build, test, demo. `make test` is what CI runs (via .ci/run).
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build deps lint test demo gen clean

all: build

build:
	$(CARGO) build

# System packages the tests and the demo need (MariaDB server and client, zstd).
deps:
	@scripts/install-deps.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

test: deps
	$(CARGO) test -- --test-threads=2

demo: deps build
	scripts/demo.sh

# Regenerate the committed completion scripts and man page from the clap definition.
gen: build
	for s in bash zsh fish elvish powershell; do ./target/debug/storagetapper completions $$s > completions/storagetapper.$$s; done
	./target/debug/storagetapper man > man/storagetapper.1

clean:
	$(CARGO) clean
