# Careline developer entry points. `make` (or `make help`) lists them.
#
# Connection defaults (see scripts/lib.sh for why the URL carries a password); override from the
# environment or the command line: `make test DATABASE_URL=postgres://...`.
export DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/careline
export AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/%2f

CARGO ?= cargo
# Extra arguments for the test runner, e.g. `make test TEST_ARGS=--no-fail-fast` (CI does).
TEST_ARGS ?=
IMAGE ?= careline:dev
DEMO_PACKAGES := -p ingest -p scheduler -p sender -p webhook-consumer -p wa-sandbox -p careline-demo
BENCH_PACKAGES := -p sender -p wa-sandbox -p webhook-consumer -p ingest -p careline-bench
# Arguments, e.g. `make bench BENCH_ARGS='--only 80,1000'` or
# `make fault-run FAULT_ARGS='--jobs 2000 --replicas 3'` (`careline-bench help` lists them).
BENCH_ARGS ?=
FAULT_ARGS ?= --jobs 100000 --replicas 3

.DEFAULT_GOAL := help
.PHONY: help up migrate build test lint fmt demo bench fault-run deny docker validate-deploy clean-test-dbs

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

up: ## Install (apt, if absent) and start PostgreSQL and RabbitMQ; create the database
	@bash scripts/up.sh

migrate: up ## Apply the database migrations (builds the scheduler)
	$(CARGO) run -q --locked -p scheduler -- migrate

build: ## Build the workspace (debug)
	$(CARGO) build --workspace --locked

# nextest does not run doc tests, so they run first with cargo test; nextest's summary then closes
# the output.
test: up ## Run every test against the local services (nextest when installed)
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		set -e; \
		echo "$(CARGO) test --workspace --locked --doc"; \
		$(CARGO) test --workspace --locked --doc; \
		echo "$(CARGO) nextest run --workspace --locked $(TEST_ARGS)"; \
		$(CARGO) nextest run --workspace --locked $(TEST_ARGS); \
	else \
		echo "cargo-nextest not installed: $(CARGO) test --workspace --locked"; \
		$(CARGO) test --workspace --locked $(TEST_ARGS); \
	fi

lint: ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

demo: up ## Build release binaries and run the end-to-end demo against wa-sandbox
	$(CARGO) build --release --locked $(DEMO_PACKAGES)
	bash scripts/demo.sh

# Release binaries, then one table measured in one run (a few minutes; logs in target/bench/).
bench: up ## Benchmark table: raw RabbitMQ vs sender throughput, ceilings, violations, latency, RSS, HL7
	$(CARGO) build --release --locked $(BENCH_PACKAGES)
	target/release/careline-bench all $(BENCH_ARGS)

fault-run: up ## 100k jobs through 3 senders while wa-sandbox injects faults; counts every job's fate
	$(CARGO) build --release --locked $(BENCH_PACKAGES)
	target/release/careline-bench fault-run $(FAULT_ARGS)

# `cargo deny --offline` reads `cargo metadata`, which needs every locked crate (all platforms)
# downloaded: `cargo fetch` does that from crates.io first.
deny: ## Licences, bans and sources check (cargo-deny; advisories need the network)
	@if $(CARGO) deny --version >/dev/null 2>&1; then \
		set -e; \
		$(CARGO) fetch --locked --quiet; \
		echo "$(CARGO) deny --offline check --hide-inclusion-graph bans licenses sources"; \
		$(CARGO) deny --offline check --hide-inclusion-graph bans licenses sources; \
	else \
		echo "cargo-deny is not installed (cargo install --locked cargo-deny): skipping"; \
	fi

docker: ## Build the container image (needs a Docker engine)
	docker build -f deploy/Dockerfile -t $(IMAGE) .

# Installs its pinned Python validators into .venv-deploy on first use (about a minute).
validate-deploy: ## Check deploy/ and docker-compose.yml: kustomize, schemas, CRDs, hadolint, checkov, dashboard
	@bash scripts/validate-deploy.sh

clean-test-dbs: ## Drop careline_test_* databases and test-* queues left by crashed test runs
	@bash scripts/clean-test-dbs.sh
