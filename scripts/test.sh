#!/usr/bin/env bash
# Install bench with its test dependencies into ./.venv and run the test suite.
# torch==2.13.0 first: on this kind of machine it is a local CPU wheel (seconds); the project's
# own requirement is a range, so pip keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
python -m pytest "$@"
