//! Write sparkhost workloads in Rust.
//!
//! A workload decides *what* requests a benchmark sends and in which order;
//! the host decides *when*, sends them and measures them. Implement
//! [`Workload`] for a type and export it with [`export_workload!`]; building
//! the crate as a `cdylib` for `wasm32-wasip2` then yields a component that
//! exports `sparkhost:workload/planner@0.1.0`.
//!
//! ```no_run
//! use sparkhost_workload::{
//!     Arrival, Batch, Generation, Params, Phase, Prompt, RequestSpec, Result, Workload,
//!     WorkloadInfo,
//! };
//!
//! struct Hello {
//!     left: u32,
//! }
//!
//! impl Workload for Hello {
//!     fn describe() -> WorkloadInfo {
//!         WorkloadInfo {
//!             name: "hello".into(),
//!             version: "0.1.0".into(),
//!             description: "Says hello a few times.".into(),
//!             params: vec![sparkhost_workload::param("requests", "How many requests.", "3")],
//!         }
//!     }
//!
//!     fn create(params: &Params, _seed: u64) -> Result<Self> {
//!         Ok(Self { left: params.get_u32("requests")? })
//!     }
//!
//!     fn phases(&self) -> Vec<Phase> {
//!         vec![Phase { name: "main".into(), include_in_summary: true, load: None }]
//!     }
//!
//!     fn next_batch(&mut self, max: u32) -> Result<Batch> {
//!         let n = self.left.min(max);
//!         let requests = (0..n)
//!             .map(|_| {
//!                 self.left -= 1;
//!                 RequestSpec {
//!                     id: format!("hello-{}", self.left),
//!                     phase: "main".into(),
//!                     session_id: None,
//!                     prefix_hash: None,
//!                     prompt: Prompt::Text("Say hello.".into()),
//!                     generation: Generation {
//!                         max_tokens: 16,
//!                         temperature: None,
//!                         top_p: None,
//!                         stop: vec![],
//!                         seed: None,
//!                         ignore_eos: false,
//!                     },
//!                     arrival: Arrival::Asap,
//!                     labels: vec![],
//!                 }
//!             })
//!             .collect();
//!         Ok(Batch { requests, done: self.left == 0 })
//!     }
//! }
//!
//! sparkhost_workload::export_workload!(Hello);
//! ```
//!
//! # Layout
//!
//! - this file: the [`Workload`] trait, [`export_workload!`] and the WIT
//!   record types re-exported by name.
//! - [`params`]: [`Params`], typed and validated parameter access, and the
//!   shared generation params ([`generation_params`]).
//! - [`host`]: the host's imports (log, token counting and fitting).
//! - [`tokens`]: the [`Tokenizer`] trait over those imports, with a
//!   word-counting stand-in for native tests.
//! - [`rng`]: [`SplitMix64`], the portable PRNG every random choice uses.
//! - [`text`]: the synthetic document builder, the seed's size rules and
//!   the Llama-3 template.
//! - [`plan`]: [`Sequence`], phases whose requests are built lazily, in
//!   order, by one [`Source`] each; [`Sequenced`], the [`Workload`] of a
//!   planner that is one such sequence ([`SequenceWorkload`]).
//! - [`prompt`]: [`PromptFormat`] (`api`/`template` params) rendering chat
//!   messages as a chat or completions prompt.
//! - [`hash`]: [`sha256_hex`], the form of every `prefix_hash`.
//! - [`data`]: reading a file the user granted with `--param NAME=@FILE`.
//! - [`salt`]: [`Salt`], the per-run salt param that keeps repeated runs
//!   from inheriting each other's cache hits.
//! - `wit` (hidden): the raw wit-bindgen output, generated from the
//!   repository's `wit/workload@0.1.0`.
//! - `__private` (hidden): the adapters from [`Workload`] to the generated
//!   traits, which [`export_workload!`] instantiates.
//!
//! Host imports work only inside a component (natively they panic);
//! everything except [`host`] and [`HostTokenizer`] is pure and unit-tested
//! natively with `cargo test -p sparkhost-workload`.

pub mod data;
pub mod hash;
pub mod host;
pub mod params;
pub mod plan;
pub mod prompt;
pub mod rng;
pub mod salt;
pub mod text;
pub mod tokens;

pub use hash::sha256_hex;
pub use params::{GenerationDefaults, Params, generation_params};
pub use plan::{Sequence, SequenceWorkload, Sequenced, Source, closed_phase, counted};
pub use prompt::{Api, PromptFormat, Template, message};
pub use rng::SplitMix64;
pub use salt::{Salt, salt_param};
pub use tokens::{HostTokenizer, Tokenizer, WordTokenizer};

#[doc(hidden)]
pub mod wit {
    wit_bindgen::generate!({
        world: "workload",
        path: "../../wit/workload@0.1.0",
        // The `export!` macro is invoked from workload crates, so it must be
        // public and must find the bindings through this crate's path.
        pub_export_macro: true,
        default_bindings_module: "sparkhost_workload::wit",
        additional_derives: [PartialEq],
    });
}

pub use wit::sparkhost::workload::types::{
    Arrival, Batch, ChatMessage, GammaProcess, Generation, Label, LoadModel, Param, ParamInfo,
    Phase, Prompt, RequestSpec, ResponseSummary, WorkloadError, WorkloadInfo,
};

/// The result of workload methods; errors reach the host as the WIT
/// `workload-error`.
pub type Result<T, E = WorkloadError> = std::result::Result<T, E>;

/// A benchmark workload: a planner the host asks for batches of requests.
///
/// The host calls [`create`](Self::create) once per run, then
/// [`phases`](Self::phases) once, then [`next_batch`](Self::next_batch)
/// until a batch says `done`, interleaved with
/// [`on_response`](Self::on_response) for every finished request. Calls never
/// overlap. Output must depend only on the params, the seed and the host's
/// tokenizer, so that a run can be reproduced.
pub trait Workload: Sized + 'static {
    /// Name, version, description and parameters with their defaults.
    /// Must not depend on params.
    fn describe() -> WorkloadInfo;

    /// Builds the planner for one run. `params` holds the user's values over
    /// the defaults from [`describe`](Self::describe).
    fn create(params: &Params, seed: u64) -> Result<Self>;

    /// The phases, in run order.
    fn phases(&self) -> Vec<Phase>;

    /// Up to `max` further requests, in phase order. Set `done` once no
    /// request will follow; an empty batch that is not done means "waiting
    /// for responses".
    fn next_batch(&mut self, max: u32) -> Result<Batch>;

    /// Called once for every finished request, in completion order. Only
    /// closed-loop workloads that react to responses need it.
    fn on_response(&mut self, summary: ResponseSummary) -> Result<()> {
        let _ = summary;
        Ok(())
    }
}

/// A [`ParamInfo`] from string slices, for [`Workload::describe`].
pub fn param(name: &str, description: &str, default_value: &str) -> ParamInfo {
    ParamInfo {
        name: name.to_string(),
        description: description.to_string(),
        default_value: default_value.to_string(),
    }
}

/// A [`Label`] from string slices, for [`RequestSpec::labels`].
pub fn label(key: &str, value: &str) -> Label {
    Label {
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// Exports a [`Workload`] implementation as the component's
/// `sparkhost:workload/planner@0.1.0`.
///
/// Invoke it once in a `cdylib`, with a type that implements [`Workload`];
/// see the crate-level example.
// rustfmt cannot parse wit-bindgen's `with_types_in` syntax and mangles the
// indentation of the whole body.
#[rustfmt::skip]
#[macro_export]
macro_rules! export_workload {
    ($workload:ty) => {
        const _: () = {
            // wit-bindgen's `export!` takes an identifier, not a type path.
            type SparkhostWorkloadExport = $crate::__private::Export<$workload>;
            $crate::wit::export!(SparkhostWorkloadExport with_types_in $crate::wit);
        };
    };
}

/// What [`export_workload!`] expands to; not a stable API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;
    use std::marker::PhantomData;

    use crate::wit::exports::sparkhost::workload::planner as planner_export;
    use crate::{Batch, Param, Params, Phase, ResponseSummary, Result, Workload, WorkloadInfo};

    /// The exported `planner` interface for workload `W`.
    pub struct Export<W>(PhantomData<W>);

    /// The exported `generator` resource: one `W` per run.
    ///
    /// wit-bindgen hands resource methods `&self`; the host never calls into
    /// one instance concurrently, so a `RefCell` gives `&mut W` without any
    /// locking.
    pub struct GeneratorOf<W>(RefCell<W>);

    impl<W: Workload> planner_export::Guest for Export<W> {
        type Generator = GeneratorOf<W>;

        fn describe() -> WorkloadInfo {
            W::describe()
        }
    }

    impl<W: Workload> planner_export::GuestGenerator for GeneratorOf<W> {
        fn create(params: Vec<Param>, seed: u64) -> Result<planner_export::Generator> {
            let params = Params::new(&W::describe().params, params)?;
            let workload = W::create(&params, seed)?;
            Ok(planner_export::Generator::new(GeneratorOf(RefCell::new(
                workload,
            ))))
        }

        fn phases(&self) -> Vec<Phase> {
            self.0.borrow().phases()
        }

        fn next_batch(&self, max: u32) -> Result<Batch> {
            self.0.borrow_mut().next_batch(max)
        }

        fn on_response(&self, summary: ResponseSummary) -> Result<()> {
            self.0.borrow_mut().on_response(summary)
        }
    }
}
