#!/usr/bin/env bash
# serve_batch.sh on the CUDA backend (moekit serve --backend cuda): skipped,
# saying why, where no GPU is usable.
MK_SERVE_BACKEND=cuda exec bash "$(dirname "$0")/serve_batch.sh"
