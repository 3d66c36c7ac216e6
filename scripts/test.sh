#!/usr/bin/env bash
# The tests: creates .venv, installs learnloop with test tools, lints, runs pytest against real
# servers the fixtures start themselves (Tansu broker, redis-server).
EXTRAS=embedded,dev
source "$(dirname "$0")/venv.sh"
ruff check .
exec python -m pytest "$@"
