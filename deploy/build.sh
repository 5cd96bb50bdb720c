#!/usr/bin/env bash
# Builds and pushes both images (run from anywhere; builds from the repository root).
set -euo pipefail
. "$(dirname "$0")/config.sh"
cd "$(dirname "$0")/.."

run gcloud auth configure-docker "${REGION}-docker.pkg.dev" --quiet
run docker build . -f Dockerfile.server --tag "$SERVER_IMAGE"
run docker push "$SERVER_IMAGE"
run docker build . -f Dockerfile.worker --tag "$WORKER_IMAGE"
run docker push "$WORKER_IMAGE"
