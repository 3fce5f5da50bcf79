#!/usr/bin/env bash
# `make flex-template` (build) and `make flex-run` (run): txpipe's Dataflow Flex Template with
# the documented gcloud commands (docs/dataflow.md). Needs a real project: PROJECT_ID from the
# environment or .env, exactly as `python -m txpipe config` reads it; the offline default is
# refused. Override BUCKET, REPOSITORY, TAG, IMAGE, TEMPLATE, JOB_NAME, SERVICE_ACCOUNT or
# PARAMETERS (name=value,name=value) in the environment; DRY_RUN=1 prints the commands
# without running them.
set -euo pipefail
cd "$(dirname "$0")/.."

action=${1:-build}
py=${PY:-.venv/bin/python}
config=$("$py" -m txpipe config 2>&1) || { echo "flex-template: ${config##*$'\n'}" >&2; exit 2; }
setting() { sed -n "s/^$1=//p" <<<"$config"; }

PROJECT=$(setting PROJECT_ID)
REGION=$(setting REGION)
if [ -z "$PROJECT" ] || [ "$PROJECT" = "txpipe-local" ]; then
    echo "flex-template: set PROJECT_ID (environment or .env) to your Google Cloud project;" \
         "'${PROJECT}' is the offline default" >&2
    exit 2
fi
BUCKET=${BUCKET:-$PROJECT-txpipe}
REPOSITORY=${REPOSITORY:-txpipe}
TAG=${TAG:-$(git rev-parse --short HEAD 2>/dev/null || date -u +%Y%m%d-%H%M%S)}
IMAGE=${IMAGE:-$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/txpipe-flex:$TAG}
TEMPLATE=${TEMPLATE:-gs://$BUCKET/templates/txpipe.json}

step() {
    echo "+ $*"
    if [ -z "${DRY_RUN:-}" ]; then "$@"; fi
}

case "$action" in
    build)
        step gcloud builds submit --project "$PROJECT" \
            --config dataflow/cloudbuild.yaml --substitutions "_IMAGE=$IMAGE" .
        step gcloud dataflow flex-template build "$TEMPLATE" --project "$PROJECT" \
            --image "$IMAGE" --sdk-language PYTHON --metadata-file dataflow/metadata.json
        ;;
    run)
        step gcloud dataflow flex-template run "${JOB_NAME:-txpipe}" --project "$PROJECT" \
            --region "$REGION" --template-file-gcs-location "$TEMPLATE" \
            --staging-location "gs://$BUCKET/staging" --temp-location "gs://$BUCKET/tmp" \
            --enable-streaming-engine --num-workers 2 --max-workers 10 \
            --worker-machine-type n1-standard-2 \
            ${SERVICE_ACCOUNT:+--service-account-email "$SERVICE_ACCOUNT"} \
            --parameters "${PARAMETERS:-bigquery_dataset=$(setting BIGQUERY_DATASET_ID)}"
        ;;
    *)
        echo "flex-template: unknown action '$action' (build or run)" >&2
        exit 2
        ;;
esac
