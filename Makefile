# sparkhost — build, demo and test entry points.
#   make demo   Rust only: builds, runs rehydrate_replay in B0/B1/B2 against the
#               in-process SIMULATED engine (--endpoint sim:...), compares them,
#               writes the HTML reports and prints where they are.
#   make demo-dynamo  the real Dynamo frontend + mocker on loopback, the
#               synthetic workload against it (needs `make dynamo`'s venv).
#   make test   lints (fmt, clippy: host and guests), runs the guest unit tests,
#               builds everything and runs the whole test suite (CI runs this).

CARGO       ?= cargo
WASM_TARGET := wasm32-wasip2
WL_OUT      := workloads/target/$(WASM_TARGET)/release
VENV        := .venv-dynamo
MODEL_DIR   := target/dynamo-model/tiny-llama
SPARKHOST   := target/release/sparkhost
GUESTS      := synthetic spin hog panic bad_config future_version
WORKLOADS   := synthetic reuse_verify local_copilot_burst eviction_replay rehydrate_replay \
               agent_loop rag_summarize kv_pressure trace_replay

.PHONY: all build wasm workloads dynamo demo demo-dynamo test test-deps unit guest-test lint stack-up stack-down clean

all: build workloads

build:
	$(CARGO) build --release --locked

# Guests build with their own workspace and profile; the host never needs them to compile.
# `wasm` is the Rust guests only; `workloads` adds the JS/Python examples.
workloads: wasm
	$(MAKE) examples

wasm:
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	$(CARGO) build --release --locked --target $(WASM_TARGET) --manifest-path workloads/Cargo.toml
	for w in $(WORKLOADS); do cp $(WL_OUT)/$$w.wasm workloads/$$w.wasm; done
	cp $(WL_OUT)/report_default.wasm workloads/report-default.wasm
	# The design card's name for the local-copilot workload; the component
	# (and the scenario name in manifests) is local_copilot_burst.
	cp $(WL_OUT)/local_copilot_burst.wasm workloads/copilot.wasm
	mkdir -p target/test-guests
	for g in $(GUESTS); do cp $(WL_OUT)/$$g.wasm target/test-guests/$$g.wasm; done

$(VENV)/.sparkhost-dynamo-stamp: scripts/dynamo/requirements.txt scripts/dynamo/install.sh
	scripts/dynamo/install.sh $(VENV)

$(MODEL_DIR)/tokenizer.json: scripts/dynamo/mkmodel.py $(VENV)/.sparkhost-dynamo-stamp
	$(VENV)/bin/python scripts/dynamo/mkmodel.py $(MODEL_DIR)

dynamo: $(VENV)/.sparkhost-dynamo-stamp $(MODEL_DIR)/tokenizer.json

demo: build wasm
	scripts/demo-sim.sh

demo-dynamo: build workloads dynamo
	scripts/demo.sh

# Chromium for report tests, QEMU + kernel for the NVMe test (apt, idempotent).
test-deps:
	scripts/install-test-deps.sh

unit:
	$(CARGO) test --release --locked --lib --bins

# Guest workspace: its unit tests and doc tests run natively (host imports
# are never called by them); its debug build shares nothing with the host's.
guest-test:
	$(CARGO) test --locked --manifest-path workloads/Cargo.toml

# Lint and guest tests first: they fail in seconds where the suite takes minutes.
test: lint guest-test test-deps build workloads dynamo examples-test
	$(CARGO) test --release --locked -- --test-threads=1

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --all --manifest-path workloads/Cargo.toml -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings
	$(CARGO) clippy --release --locked --target $(WASM_TARGET) --manifest-path workloads/Cargo.toml --all-targets -- -D warnings

# A stack from stacks/ (default: the Dynamo mocker) in one tier mode; the
# endpoint is printed. `make stack-up STACK_PROFILE=sim TIER_MODE=B2`.
STACK_PROFILE ?= dynamo-mocker
TIER_MODE     ?= B0
STACK_DIR     ?= bench/stack

stack-up: build dynamo
	$(SPARKHOST) stack up --profile $(STACK_PROFILE) --tier-mode $(TIER_MODE) --state-dir $(STACK_DIR)

stack-down:
	$(SPARKHOST) stack down --state-dir $(STACK_DIR)

clean:
	$(CARGO) clean
	rm -rf workloads/target workloads/*.wasm
	rm -f $(EX_WASM)

# --- examples/: reuse_verify and local_copilot_burst in JavaScript and Python --
# Built from registry packages only (npm: componentize-js, PyPI:
# componentize-py; versions pinned in examples/js/package-lock.json and
# examples/python/requirements.txt). File targets, so an unchanged component
# is never rebuilt (a JS build takes 7-10 s, a Python build 10-16 s, on 2 cores).
EX_JS       := examples/js
EX_PY       := examples/python
EX_NAMES    := reuse_verify local_copilot_burst
EX_WIT      := $(wildcard wit/workload@0.1.0/*.wit)
EX_WASM     := $(EX_NAMES:%=$(EX_JS)/%.wasm) $(EX_NAMES:%=$(EX_PY)/%.wasm)
EX_JS_TOOLS := $(EX_JS)/node_modules/.sparkhost-stamp
EX_PY_TOOLS := $(EX_PY)/.venv/.sparkhost-stamp

.PHONY: examples examples-test

examples: $(EX_WASM)

$(EX_JS_TOOLS): $(EX_JS)/package.json $(EX_JS)/package-lock.json
	cd $(EX_JS) && npm ci --no-audit --no-fund
	touch $@

$(EX_PY_TOOLS): $(EX_PY)/requirements.txt
	python3 -m venv $(EX_PY)/.venv
	$(EX_PY)/.venv/bin/pip install --quiet -r $<
	touch $@

# `-d stdio random clocks http fetch-event`: a component with no WASI imports
# (the host links no wasi:http; see examples/README.md).
$(EX_JS)/%.wasm: $(EX_JS)/%/app.js $(wildcard $(EX_JS)/lib/*.js) $(EX_WIT) $(EX_JS_TOOLS)
	$(EX_JS)/node_modules/.bin/componentize-js --wit wit/workload@0.1.0 -n workload \
		-d stdio random clocks http fetch-event -o $(@:.wasm=.tmp.wasm) $<
	mv $(@:.wasm=.tmp.wasm) $@

$(EX_PY)/%.wasm: $(EX_PY)/%/app.py $(wildcard $(EX_PY)/lib/*.py $(EX_PY)/lib/sparkhost/*.py) $(EX_WIT) $(EX_PY_TOOLS)
	$(EX_PY)/.venv/bin/componentize-py -d wit/workload@0.1.0 -w workload componentize \
		-p $(EX_PY)/$* -p $(EX_PY)/lib app -o $(@:.wasm=.tmp.wasm)
	mv $(@:.wasm=.tmp.wasm) $@

# The SDK ports against the Rust SDK's vectors, and the workloads natively
# (the host's imports replaced by a word-counting stand-in).
examples-test: $(EX_JS_TOOLS) $(EX_PY_TOOLS)
	cd $(EX_JS) && node --import ./test/register-host.js --test test/*.test.js
	cd $(EX_PY) && .venv/bin/python -m unittest discover -s tests

# --- reports: the default report generator's golden report.md -------------
# Rewrites tests/fixtures/golden/*.report.md from the fixtures; review the diff.
.PHONY: report-golden
report-golden: build workloads
	SPARKHOST_UPDATE_GOLDEN=1 $(CARGO) test --release --locked --test e2e -- reports::golden --test-threads=1
