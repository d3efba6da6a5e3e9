#!/usr/bin/env bash
# Container entrypoint: run any bundle workflow, or any `python -m monai.bundle` command.
#   IMAGE run BUNDLE WORKFLOW [--strategy NAME] [--key value ...]   -> medunlearn run ... (train/unlearn/evaluate/inference)
#   IMAGE monai.bundle COMMAND [ARGS ...]                           -> python -m monai.bundle COMMAND ... (run, ckpt_export, ...)
#   IMAGE COMMAND [ARGS ...]                                        -> medunlearn COMMAND ... (synthesize, compare, register, ...)
set -euo pipefail

if [ "$#" -eq 0 ]; then
    set -- --help
fi
if [ "$1" = "monai.bundle" ]; then
    shift
    exec python -m monai.bundle "$@"
fi
exec medunlearn "$@"
