//! Fault-injection tests (filled below).
