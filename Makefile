# Build, run and test eventvault. RocksDB's C++ build takes about 20 minutes on two cores, so
# the cargo target dir lives outside the clone and one profile serves binaries and tests.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/eventvault/target
CARGO ?= cargo
BIN := $(CARGO_TARGET_DIR)/debug/eventvault
TEST_FEATURES := --features fault-injection

.PHONY: all deps build run worker test api-check browser-test test-garage lint fmt compose-check bench bench-smoke fuzz fuzz-smoke clean-data

all: build

deps:
	@scripts/install-deps

build: deps
	$(CARGO) build --locked

## Serve on 127.0.0.1:5050 with ./storage, ./backups and ./restore.
run: build
	$(BIN) serve

## Follow the bus of a local server and print each message as a JSON line.
worker: build
	$(BIN) worker --consumer cli-worker

## Format, lint, the compose file, the benchmark and fuzzing smoke runs, unit and integration tests, then the browser test.
test: deps lint compose-check bench-smoke fuzz-smoke
	$(CARGO) test --locked $(TEST_FEATURES)
	$(MAKE) --no-print-directory api-check
	$(MAKE) --no-print-directory browser-test

## Schemathesis against a live server and its OpenAPI document: no 5xx, every answer as documented.
## (The binary `cargo test` built: the same features, so nothing is rebuilt after the tests.)
api-check: deps
	$(CARGO) build --locked $(TEST_FEATURES)
	scripts/schemathesis

## The admin page in headless chromium (Playwright), against a live server; prints the
## screenshots' paths. Built with the tests' features, so after `cargo test` nothing recompiles.
browser-test: deps
	$(CARGO) build --locked $(TEST_FEATURES)
	scripts/browser-test

## The repository on Garage, a real distributed S3 store (built once per machine, 10–15 minutes).
test-garage: deps
	scripts/install-garage
	$(CARGO) test --locked $(TEST_FEATURES) --test integration garage:: -- --ignored

## The full benchmarks (B1–B8): about 35 minutes and 28 GB of scratch space.
bench: deps
	bench/run

## A tiny store through every benchmark step, so bench/run keeps working; timings are not judged.
bench-smoke: deps
	bench/run --smoke

## Coverage-guided fuzzing (libFuzzer, stable Rust): every target for FUZZ_SECONDS (600) each.
fuzz: deps
	scripts/fuzz

## Every fuzz target for about 20 seconds, so the targets keep building and their seeds pass.
fuzz-smoke: deps
	scripts/fuzz --smoke

lint:
	$(CARGO) fmt --check
	scripts/import-cycles
	$(CARGO) clippy --locked --all-targets $(TEST_FEATURES) -- -D warnings

fmt:
	$(CARGO) fmt

compose-check:
	docker-compose -f docker-compose.yml config -q
	@echo "docker-compose.yml is valid"

## Remove local data (the store, backups and drop-ins), keeping the folders.
clean-data:
	find storage backups restore -mindepth 1 ! -name .gitkeep -delete
