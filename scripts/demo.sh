#!/usr/bin/env bash
# The demo on the embedded default: creates .venv, installs learnloop, runs `learnloop demo`.
EXTRAS=embedded,charts
source "$(dirname "$0")/venv.sh"
exec learnloop demo "$@"
