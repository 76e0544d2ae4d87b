"""Write sparkhost workloads in Python.

A port of the Rust SDK (workloads/sdk) with the same algorithms, so that a
workload written with it produces the same requests as its Rust twin for the
same params, seed and tokenizer:

- ``SplitMix64`` (rng): the PRNG every random choice uses.
- ``Params`` (params): typed parameter access with the Rust SDK's error
  messages, and the shared generation params.
- ``PromptFormat`` (prompt): the ``api``/``template`` params rendering chat
  messages as a chat or completions prompt.
- text: the synthetic document builder, the seed's size rules and the
  Llama-3 template.
- ``HostTokenizer`` / ``WordTokenizer`` (tokens), ``host``: the host's
  imports.
- rust: Rust's text conventions (trim, whitespace, ``{:?}``, f64 Display)
  for byte-exact output.
- ``export_workload``: from a workload class to the ``planner`` export
  componentize-py expects.

Records are the WIT types of ``wit_world.imports.types``, which
componentize-py generates at build time (and the unit tests generate with
``componentize-py bindings``).
"""

import hashlib

from wit_world.imports import types

from . import host
from .params import (
    SEED_GENERATION_DEFAULTS,
    Params,
    Sampling,
    WorkloadError,
    f32,
    generation_params,
    invalid,
    param,
)
from .prompt import PromptFormat, message, prompt_format_params
from .rng import SplitMix64
from .rust import debug_str, display_f64, split_whitespace, trim, word_count
from .text import *  # noqa: F403
from .tokens import HostTokenizer, WordTokenizer


def sha256_hex(text: str) -> str:
    """Lowercase hex SHA-256 of the UTF-8 bytes of ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def label(key: str, value: str) -> types.Label:
    """A ``label`` record."""
    return types.Label(key=key, value=value)


_EXPORTED = {}


def export_workload(workload_class):
    """Exports ``workload_class`` as the component's ``planner``; call it once,
    in the module given to ``componentize-py componentize`` (``app.py``):

        Planner = sparkhost.export_workload(MyWorkload)

    The class provides ``describe()`` (a ``WorkloadInfo``) and
    ``create(params, seed)`` as class or static methods, and ``phases()``,
    ``next_batch(max)`` and optionally ``on_response(summary)``. ``params``
    is a ``Params`` over ``describe()``'s defaults. Raise ``WorkloadError``
    to fail a call.

    Returns the ``Planner`` class componentize-py looks up in ``app.py``;
    the resource class it looks up in the module ``planner`` is provided by
    ``lib/planner.py``, which takes it from here.
    """
    import wit_world.exports
    import wit_world.exports.planner

    def wrap(call):
        try:
            return call()
        except WorkloadError as e:
            from componentize_py_types import Err

            raise Err(e.to_wit()) from None

    class Planner(wit_world.exports.Planner):
        def describe(self):
            return workload_class.describe()

    class Generator(wit_world.exports.planner.Generator):
        def __init__(self, workload):
            self._workload = workload

        @classmethod
        def create(cls, params, seed):
            def build():
                p = Params(workload_class.describe().params, params)
                return cls(workload_class.create(p, seed))

            return wrap(build)

        def phases(self):
            return self._workload.phases()

        def next_batch(self, max):
            return wrap(lambda: self._workload.next_batch(max))

        def on_response(self, summary):
            handler = getattr(self._workload, "on_response", None)
            if handler is not None:
                wrap(lambda: handler(summary))

    _EXPORTED["Generator"] = Generator
    return Planner


def exported_generator():
    """The resource class of the workload ``export_workload`` exported."""
    if "Generator" not in _EXPORTED:
        raise RuntimeError("no workload exported: call sparkhost.export_workload in app.py")
    return _EXPORTED["Generator"]
