# Two compile_queue instances under one make jobserver, as two crates compiling at once
# under `cargo build -j2`: `make -j2 -f examples/compile_queue.mk`. Each instance's pool
# takes its workers' tokens from make, so both together run at most two threads.
# Build first: cargo build --release --example compile_queue
BIN ?= target/release/examples/compile_queue

all: first second

first second:
	+$(BIN) --quick --jobserver
