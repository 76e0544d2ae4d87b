//! Generated bindings for `sparkhost:workload@0.1.0`; kept apart so the rest
//! of the sandbox reads as plain Rust.
#![allow(missing_docs, clippy::all)]

wasmtime::component::bindgen!({
    world: "workload",
    path: "../wit/workload@0.1.0",
});
