# Settings shared by the deploy scripts; sourced, not run. Every value can be overridden from
# the environment: PROJECT=my-project REGION=europe-west6 deploy/infra.sh
# DRY_RUN=1 prints every gcloud/docker command instead of running it.
set -euo pipefail

PROJECT=${PROJECT:-$(gcloud config get-value project 2>/dev/null || true)}
REGION=${REGION:-europe-west6}
ZONE=${ZONE:-${REGION}-a}
NETWORK=${NETWORK:-default}
SUBNET=${SUBNET:-default}

# Artifact Registry repository and images (the original hexz names).
REPOSITORY=${REPOSITORY:-hexz}
TAG=${TAG:-latest}
REGISTRY=${REGISTRY:-${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}}
SERVER_IMAGE=${SERVER_IMAGE:-${REGISTRY}/server:${TAG}}
WORKER_IMAGE=${WORKER_IMAGE:-${REGISTRY}/worker:${TAG}}

# The training run.
MODEL_NAME=${MODEL_NAME:-flagz}
BUCKET=${BUCKET:-${PROJECT}-hexz}
STORAGE_URL=${STORAGE_URL:-gs://${BUCKET}/runs}
# The bearer token the training server requires, kept in Secret Manager (infra.sh creates it).
AUTH_SECRET=${AUTH_SECRET:-hexz-auth-token}

# Memorystore for Redis (the model bus).
REDIS_INSTANCE=${REDIS_INSTANCE:-hexz-redis}
REDIS_SIZE_GB=${REDIS_SIZE_GB:-1}

# The training server VM.
VM_NAME=${VM_NAME:-hexz-server}
VM_MACHINE_TYPE=${VM_MACHINE_TYPE:-e2-standard-4}
SERVER_PORT=${SERVER_PORT:-8080}
SERVER_SA=${SERVER_SA:-hexz-server}

# The self-play workers: a Cloud Run job. Each task plays until HEXZ_MAX_SECONDS, which leaves
# a minute of the task timeout for the last uploads.
WORKER_JOB=${WORKER_JOB:-hexz-worker}
WORKER_TASKS=${WORKER_TASKS:-10}
WORKER_PARALLELISM=${WORKER_PARALLELISM:-10}
WORKER_TASK_TIMEOUT=${WORKER_TASK_TIMEOUT:-3600}
WORKER_CPU=${WORKER_CPU:-4}
WORKER_MEMORY=${WORKER_MEMORY:-4Gi}
WORKER_RUNS_PER_MOVE=${WORKER_RUNS_PER_MOVE:-800}
WORKER_SA=${WORKER_SA:-hexz-worker}

# The CPU player: a Cloud Run service from the server image.
CPU_SERVICE=${CPU_SERVICE:-hexz-cpu}
CPU_CPU=${CPU_CPU:-2}
CPU_MEMORY=${CPU_MEMORY:-4Gi}
CPU_MAX_INSTANCES=${CPU_MAX_INSTANCES:-4}
CPU_MAX_THINK_MS=${CPU_MAX_THINK_MS:-5000}
CPU_PUBLIC=${CPU_PUBLIC:-0}          # 1: --allow-unauthenticated (the hexz Go server sends no token)
CPU_SA=${CPU_SA:-hexz-cpu}

sa_email() { echo "$1@${PROJECT}.iam.gserviceaccount.com"; }

# Runs a command, or prints it (shell-quoted) with DRY_RUN=1.
run() {
  if [ -n "${DRY_RUN:-}" ]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}

# The Memorystore host and the server VM's internal address (placeholders in a dry run).
redis_host() {
  if [ -n "${DRY_RUN:-}" ]; then echo REDIS_HOST; return; fi
  gcloud redis instances describe "$REDIS_INSTANCE" --region "$REGION" --project "$PROJECT" \
    --format 'value(host)'
}
server_ip() {
  if [ -n "${DRY_RUN:-}" ]; then echo SERVER_IP; return; fi
  gcloud compute instances describe "$VM_NAME" --zone "$ZONE" --project "$PROJECT" \
    --format 'value(networkInterfaces[0].networkIP)'
}

if [ -z "$PROJECT" ]; then
  echo "deploy: set PROJECT (or gcloud config set project ...)" >&2
  exit 2
fi
