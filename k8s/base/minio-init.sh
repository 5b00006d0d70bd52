#!/bin/sh
# Prepare the object store for DermaSynth (run by compose's minio-init and the Kubernetes Job minio-init;
# safe to rerun): the bucket, Triton's models/ prefix, and one user per service:
#   GATEWAY_S3_ACCESS_KEY / WORKER_S3_ACCESS_KEY  read-write on the bucket
#   TRITON_S3_ACCESS_KEY                          read-only on models/ (Triton's model repository)
# Needs MINIO_URL (http://minio:9000), MINIO_ROOT_USER, MINIO_ROOT_PASSWORD, DERMASYNTH_S3_BUCKET and the
# *_S3_ACCESS_KEY / *_S3_SECRET_KEY pairs above. It refuses placeholder or short secrets and says which.
# The k8s copy (k8s/base/minio-init.sh) must stay identical: tests/k8s check it.
set -eu

bucket="${DERMASYNTH_S3_BUCKET:-dermasynth}"
work="${TMPDIR:-/tmp}/minio-init"
mkdir -p "$work"

refuse() {
  echo "minio-init: refusing to start: $*" >&2
  exit 64
}

# A secret must be set, 16 characters or more, and not a placeholder from an example file.
check_secret() {
  name="$1"
  value="$2"
  [ -n "$value" ] || refuse "$name is empty; set it (e.g. openssl rand -hex 24)"
  [ "${#value}" -ge 16 ] || refuse "$name is shorter than 16 characters; use e.g. openssl rand -hex 24"
  lowered=$(printf '%s' "$value" | tr 'A-Z' 'a-z')
  case "$lowered" in
    *change-me* | *changeme* | *change_me* | *placeholder* | *minioadmin* | *example* | *password*)
      refuse "$name is a placeholder ('$value' is not a secret); set a random one (openssl rand -hex 24)" ;;
  esac
}

check_user() {
  name="$1"
  value="$2"
  [ "${#value}" -ge 3 ] || refuse "$name must be 3 characters or more"
}

check_user MINIO_ROOT_USER "${MINIO_ROOT_USER:-}"
check_secret MINIO_ROOT_PASSWORD "${MINIO_ROOT_PASSWORD:-}"
for service in GATEWAY WORKER TRITON; do
  eval "access=\${${service}_S3_ACCESS_KEY:-}"
  eval "secret=\${${service}_S3_SECRET_KEY:-}"
  check_user "${service}_S3_ACCESS_KEY" "$access"
  check_secret "${service}_S3_SECRET_KEY" "$secret"
  [ "$access" != "$MINIO_ROOT_USER" ] || refuse "${service}_S3_ACCESS_KEY must not be the root user"
done

url="${MINIO_URL:-http://minio:9000}"
tries=0
until mc alias set store "$url" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  tries=$((tries + 1))
  [ "$tries" -lt 90 ] || { echo "minio-init: no object store at $url after 3 minutes" >&2; exit 1; }
  echo "waiting for the object store at $url"
  sleep 2
done

mc mb --ignore-existing "store/$bucket"
# Triton's model repository (s3://<endpoint>/$bucket/models) must exist before Triton starts.
if ! mc stat "store/$bucket/models/.keep" >/dev/null 2>&1; then
  printf '' | mc pipe "store/$bucket/models/.keep"
fi

cat >"$work/readwrite.json" <<JSON
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
   "Resource": ["arn:aws:s3:::$bucket"]},
  {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                                 "s3:ListMultipartUploadParts"],
   "Resource": ["arn:aws:s3:::$bucket/*"]}]}
JSON
cat >"$work/models-readonly.json" <<JSON
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": ["arn:aws:s3:::$bucket"]},
  {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::$bucket"],
   "Condition": {"StringLike": {"s3:prefix": ["models", "models/", "models/*"]}}},
  {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::$bucket/models/*"]}]}
JSON
mc admin policy create store dermasynth-readwrite "$work/readwrite.json"
mc admin policy create store dermasynth-models-readonly "$work/models-readonly.json"

# attach a policy to a user, accepting "already attached" so that reruns succeed
attach() {
  if ! mc admin policy attach store "$1" --user "$2" >"$work/attach.log" 2>&1; then
    grep -qi "already" "$work/attach.log" || { cat "$work/attach.log" >&2; exit 1; }
  fi
}

mc admin user add store "$GATEWAY_S3_ACCESS_KEY" "$GATEWAY_S3_SECRET_KEY"
attach dermasynth-readwrite "$GATEWAY_S3_ACCESS_KEY"
mc admin user add store "$WORKER_S3_ACCESS_KEY" "$WORKER_S3_SECRET_KEY"
attach dermasynth-readwrite "$WORKER_S3_ACCESS_KEY"
mc admin user add store "$TRITON_S3_ACCESS_KEY" "$TRITON_S3_SECRET_KEY"
attach dermasynth-models-readonly "$TRITON_S3_ACCESS_KEY"

echo "minio-init: bucket $bucket ready; users for the gateway, the workers and Triton (read-only on models/)"
