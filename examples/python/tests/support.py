"""Test setup: makes ``wit_world`` (the WIT bindings componentize-py generates
at build time) importable natively, and replaces the host's imports by a
stand-in whose tokens are words (the SDK's WordTokenizer, as in the Rust
SDK's native tests). Import it before ``sparkhost`` or any workload."""

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2]
REPO = EXAMPLES.parent
PYTHON = EXAMPLES / "python"
WIT = REPO / "wit" / "workload@0.1.0"


def _bindings() -> Path:
    out = Path(tempfile.mkdtemp(prefix="sparkhost-py-bindings-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    tool = Path(sys.executable).parent / "componentize-py"
    subprocess.run(
        [str(tool), "-d", str(WIT), "-w", "workload", "bindings", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out


sys.path.insert(0, str(_bindings()))
sys.path.insert(0, str(PYTHON / "lib"))

from wit_world.imports import host as _host  # noqa: E402

from sparkhost.tokens import WordTokenizer  # noqa: E402

_words = WordTokenizer()
logged = []
_host.log = lambda level, message: logged.append((level, message))
_host.count_tokens = _words.count
_host.fit_to_tokens = _words.fit
_host.tokenizer_id = lambda: "test:words"


def vectors():
    """The Rust SDK's outputs, written by examples/testdata/vectors-gen."""
    with open(EXAMPLES / "testdata" / "sdk-vectors.json", encoding="utf-8") as f:
        return json.load(f)


def workload_module(name: str):
    """Imports ``examples/python/<name>/app.py`` under the module name
    ``<name>_app`` (every workload's module is called ``app``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_app", PYTHON / name / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
