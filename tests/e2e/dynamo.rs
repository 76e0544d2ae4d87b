//! Dynamo tests (filled below).
