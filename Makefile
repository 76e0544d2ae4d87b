# sparkhost — build, demo and test entry points.
#   make demo   builds everything, starts the real Dynamo frontend + mocker on
#               loopback, runs the synthetic workload, prints the summary, stops.
#   make test   builds everything and runs the whole test suite (CI runs this).

CARGO       ?= cargo
WASM_TARGET := wasm32-wasip2
WL_OUT      := workloads/target/$(WASM_TARGET)/release
VENV        := .venv-dynamo
MODEL_DIR   := target/dynamo-model/tiny-llama
SPARKHOST   := target/release/sparkhost
GUESTS      := synthetic spin hog panic bad_config future_version

.PHONY: all build workloads dynamo demo test unit lint stack-up stack-down clean

all: build workloads

build:
	$(CARGO) build --release --locked

# Guests build with their own workspace and profile; the host never needs them to compile.
workloads:
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	$(CARGO) build --release --locked --target $(WASM_TARGET) --manifest-path workloads/Cargo.toml
	cp $(WL_OUT)/synthetic.wasm workloads/synthetic.wasm
	mkdir -p target/test-guests
	for g in $(GUESTS); do cp $(WL_OUT)/$$g.wasm target/test-guests/$$g.wasm; done

$(VENV)/.sparkhost-dynamo-stamp: scripts/dynamo/requirements.txt scripts/dynamo/install.sh
	scripts/dynamo/install.sh $(VENV)

$(MODEL_DIR)/tokenizer.json: scripts/dynamo/mkmodel.py $(VENV)/.sparkhost-dynamo-stamp
	$(VENV)/bin/python scripts/dynamo/mkmodel.py $(MODEL_DIR)

dynamo: $(VENV)/.sparkhost-dynamo-stamp $(MODEL_DIR)/tokenizer.json

demo: build workloads dynamo
	scripts/demo.sh

unit:
	$(CARGO) test --release --locked --lib --bins

test: build workloads dynamo
	$(CARGO) test --release --locked -- --test-threads=1

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --locked --all-targets -- -D warnings

stack-up: dynamo
	scripts/dynamo/stack.sh start

stack-down:
	scripts/dynamo/stack.sh stop

clean:
	$(CARGO) clean
	rm -rf workloads/target workloads/*.wasm
