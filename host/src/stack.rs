//! Stack control: start, check and stop a serving stack (processes or
//! containers) from a TOML profile, per tier mode, instead of the seed's
//! shell scripts.
//!
//! A profile (shipped ones in `stacks/`, compiled in; or any `.toml` file)
//! names the processes, their arguments and environment per tier mode, the
//! engine-config files rendered from `kvbm/templates/`, the readiness checks
//! and where the KVBM disk cache lives. [`render::render`] turns a profile and
//! a tier mode into a [`render::Rendered`] stack: exact argv, environment and
//! file contents, with a hash of all of them that does not depend on the
//! machine (free ports and the state dir are hashed as placeholders).
//! [`supervise`] starts it, records every PID (with its start time) and
//! container id in `stack.json`, waits until the readiness checks pass and
//! stops it by those ids only, never by a name pattern.
//!
//! Layout:
//! - [`profile`]: the profile file, its validation and the built-in profiles.
//! - [`render`]: variables, per-mode arguments and environment, templates, the hash.
//! - [`health`]: the seed's health check (`/health`, `/v1/models`, KVBM
//!   metrics, NATS) and the tier checks for a running stack.
//! - [`supervise`]: `up`, `down`, `status`, `logs` and the state file.

pub mod health;
pub mod profile;
pub mod render;
pub mod supervise;

pub use profile::{Profile, ProfileError};
pub use render::Rendered;
