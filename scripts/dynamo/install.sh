#!/usr/bin/env bash
# Create the Python venv that runs the real Dynamo frontend + mocker.
#
#   scripts/dynamo/install.sh [VENV_DIR]      (default: <repo>/.venv-dynamo)
#
# Env: PYTHON (default python3.11), PIP_ARGS (extra args for every pip call).
set -euo pipefail

DYNAMO_VERSION=1.6.1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/.venv-dynamo}"
req="$here/requirements.txt"
stamp="$venv/.sparkhost-dynamo-stamp"
py="${PYTHON:-python3.11}"

# The stamp ties the venv to this exact requirements file, so editing the pins
# forces a rebuild instead of silently keeping the old closure.
want_stamp="ai-dynamo==$DYNAMO_VERSION $(sha256sum "$req" | cut -d' ' -f1)"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]] \
  && "$venv/bin/python" -c "import dynamo, importlib.metadata as m; assert m.version('ai-dynamo') == '$DYNAMO_VERSION'" 2>/dev/null; then
  echo "dynamo venv up to date: $venv"
  exit 0
fi

# A pyenv shim can exist even when that version is not installed, so ask the
# interpreter itself rather than trusting `command -v`.
if ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
  echo "error: need CPython 3.11 as '$py' (set PYTHON=/path/to/python3.11)." >&2
  echo "       requirements.txt pins wheels built for 3.11; e.g. 'pyenv install 3.11'." >&2
  exit 1
fi

if [[ -e "$venv" && -n "$(ls -A "$venv" 2>/dev/null)" ]]; then
  # Only wipe something that is recognisably a venv: VENV_DIR is user input.
  if [[ ! -f "$venv/pyvenv.cfg" ]]; then
    echo "error: $venv exists and is not a venv; refusing to overwrite it" >&2
    exit 1
  fi
  echo "rebuilding stale venv $venv"
  rm -rf "$venv"
fi

start=$SECONDS
"$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check ${PIP_ARGS:-})
# --only-binary: nothing here needs a compiler; an sdist slipping in would
# mean the pins no longer match the platform.
"${pip[@]}" install --no-deps --only-binary=:all: -r "$req"
"${pip[@]}" install --no-deps --only-binary=:all: "ai-dynamo==$DYNAMO_VERSION"

# pip check is the guard against an incomplete pin set (we used --no-deps);
# aisimulate is the one known, deliberate gap.
if problems="$("${pip[@]}" check 2>&1 | grep -v 'requires aisimulate, which is not installed')" \
  && [[ -n "$problems" && "$problems" != "No broken requirements found." ]]; then
  echo "error: inconsistent dependency set:" >&2
  echo "$problems" >&2
  exit 1
fi
"$venv/bin/python" -m dynamo.frontend --help >/dev/null
"$venv/bin/python" -m dynamo.mocker --help >/dev/null

echo "$want_stamp" >"$stamp"
echo "dynamo venv ready: $venv ($((SECONDS - start)) s, $(du -sh "$venv" | cut -f1))"
