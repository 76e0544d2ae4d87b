//! Sandbox tests (filled below).
