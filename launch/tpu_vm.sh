#!/usr/bin/env bash
# Runs FactorPortrait on a Cloud TPU VM pod slice (or several slices), through gcloud.
#
#   launch/tpu_vm.sh [options] create
#   launch/tpu_vm.sh [options] setup                       # this checkout, installed on every worker
#   launch/tpu_vm.sh [options] --bucket=BUCKET mount       # the bucket as /gcs/BUCKET on every worker
#   launch/tpu_vm.sh [options] train -- --config=configs/wan_14b.py --workdir=/gcs/BUCKET/runs/dit
#   launch/tpu_vm.sh [options] sample -- --config=... (fp-sample's flags)
#   launch/tpu_vm.sh [options] status
#   launch/tpu_vm.sh [options] delete
#
# Options (or the environment variables in brackets):
#   --name=NAME            TPU (or queued resource) name            [FP_TPU_NAME]
#   --zone=ZONE                                                     [FP_TPU_ZONE]
#   --project=PROJECT      default: gcloud's configured project     [FP_TPU_PROJECT]
#   --accelerator=TYPE     e.g. v5p-128 (64 chips), v6e-64          [FP_TPU_ACCELERATOR]
#   --version=RUNTIME      default: the generation's TPU VM runtime [FP_TPU_VERSION]
#   --slices=N             N > 1: multi-slice, a queued resource of N slices named NAME-0..NAME-(N-1)
#   --queued               request a single slice through a queued resource too
#   --spot                 Spot capacity (preemptible; fp-train resumes from its last checkpoint)
#   --bucket=BUCKET        for `mount`: a Cloud Storage bucket            [FP_TPU_BUCKET]
#   --dry-run              print the commands instead of running them
# `setup` installs this checkout's committed files (git archive HEAD) under ~/factorportrait with
# Python $FP_TPU_PYTHON (default 3.11, fetched by uv) in ~/fp-venv.
#
# `train` and `sample` start the same command on every worker of every slice (JAX finds its peers:
# FP_NUM_PROCESSES=auto), in the background, logging to ~/fp-JOB.log on each worker, then stream
# worker 0's log; Ctrl-C stops the streaming, not the job (`status` shows it, `delete` ends it).
#
# `mount` installs Cloud Storage FUSE on every worker and mounts the bucket at /gcs/BUCKET: the
# tools read and write local paths (a gs:// URL is refused), so workdirs and datasets live there.
# Use a bucket with hierarchical namespace, where a folder's rename (Orbax's commit of a step) is
# atomic; in a flat bucket it is a copy and a delete.
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }

NAME=${FP_TPU_NAME:-}
ZONE=${FP_TPU_ZONE:-}
PROJECT=${FP_TPU_PROJECT:-}
ACCELERATOR=${FP_TPU_ACCELERATOR:-}
VERSION=${FP_TPU_VERSION:-}
BUCKET=${FP_TPU_BUCKET:-}
SLICES=1
QUEUED=0
SPOT=0
DRY_RUN=0
COMMAND=""
ARGS=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=*) NAME=${1#*=} ;;
    --zone=*) ZONE=${1#*=} ;;
    --project=*) PROJECT=${1#*=} ;;
    --accelerator=*) ACCELERATOR=${1#*=} ;;
    --version=*) VERSION=${1#*=} ;;
    --slices=*) SLICES=${1#*=} ;;
    --bucket=*) BUCKET=${1#*=} ;;
    --queued) QUEUED=1 ;;
    --spot) SPOT=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --) shift; ARGS=("$@"); break ;;
    -*) die "unknown option $1 (see the top of $0)" ;;
    *) [[ -z "$COMMAND" ]] || die "one command at a time, got '$COMMAND' and '$1'"; COMMAND=$1 ;;
  esac
  shift
done

case "$COMMAND" in
  create|setup|mount|train|sample|status|delete) ;;
  "") die "give a command: create, setup, mount, train, sample, status or delete" ;;
  *) die "unknown command '$COMMAND': use create, setup, mount, train, sample, status or delete" ;;
esac
[[ -n "$NAME" ]] || die "--name (or FP_TPU_NAME) is required"
[[ -n "$ZONE" ]] || die "--zone (or FP_TPU_ZONE) is required"
[[ "$SLICES" =~ ^[1-9][0-9]*$ ]] || die "--slices must be a positive integer, got '$SLICES'"
[[ "$SLICES" -gt 1 ]] && QUEUED=1  # several slices come only through a queued resource

# The TPU VM runtime that goes with each generation.
default_version() {
  case "$1" in
    v5p-*) echo "v2-alpha-tpuv5" ;;
    v6e-*) echo "v2-alpha-tpuv6e" ;;
    v5litepod-*) echo "v2-alpha-tpuv5-lite" ;;
    v4-*) echo "tpu-ubuntu2204-base" ;;
    *) die "--version is required for accelerator '$1'" ;;
  esac
}

COMMON=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && COMMON+=(--project="$PROJECT")

quote() {  # words as a shell would need them typed (for --dry-run)
  local words=() word
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_./:=,+@%-]+$ ]]; then
      words+=("$word")
    else
      words+=("'${word//\'/\'\\\'\'}'")
    fi
  done
  echo "${words[*]}"
}

run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    quote "$@"
  else
    "$@"
  fi
}

# The slices' TPU VM names: NAME, or NAME-0 ... NAME-(N-1) for a multi-slice queued resource.
nodes() {
  if [[ "$SLICES" -gt 1 ]]; then
    for ((i = 0; i < SLICES; i++)); do echo "$NAME-$i"; done
  else
    echo "$NAME"
  fi
}

on_all_workers() {  # the same shell command on every worker of every slice
  local node
  for node in $(nodes); do
    run gcloud compute tpus tpu-vm ssh "$node" "${COMMON[@]}" --worker=all --command="$1"
  done
}

REMOTE_DIR='~/factorportrait'
VENV='~/fp-venv'
PYTHON=${FP_TPU_PYTHON:-3.11}

case "$COMMAND" in
  create)
    [[ -n "$ACCELERATOR" ]] || die "--accelerator (or FP_TPU_ACCELERATOR) is required, e.g. v5p-128"
    VERSION=${VERSION:-$(default_version "$ACCELERATOR")}
    EXTRA=()
    [[ "$SPOT" == 1 ]] && EXTRA+=(--spot)
    if [[ "$QUEUED" == 1 ]]; then
      if [[ "$SLICES" -gt 1 ]]; then
        TARGET=(--node-count="$SLICES" --node-prefix="$NAME")
      else
        TARGET=(--node-id="$NAME")
      fi
      run gcloud compute tpus queued-resources create "$NAME" "${COMMON[@]}" "${TARGET[@]}" \
        --accelerator-type="$ACCELERATOR" --runtime-version="$VERSION" "${EXTRA[@]}"
    else
      run gcloud compute tpus tpu-vm create "$NAME" "${COMMON[@]}" \
        --accelerator-type="$ACCELERATOR" --version="$VERSION" "${EXTRA[@]}"
    fi
    ;;
  setup)
    # This checkout's committed files, copied to every worker and installed with the TPU extra.
    ROOT=$(cd "$(dirname "$0")/.." && pwd)
    ARCHIVE=${TMPDIR:-/tmp}/factorportrait-$NAME.tar.gz
    run git -C "$ROOT" archive --format=tar.gz --output="$ARCHIVE" HEAD
    for node in $(nodes); do
      run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$node:factorportrait.tar.gz" "${COMMON[@]}" --worker=all
    done
    # TPU VM images ship an older Python than the package needs: uv brings its own.
    on_all_workers "rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf factorportrait.tar.gz -C $REMOTE_DIR \
&& python3 -m pip install --quiet --user uv && ~/.local/bin/uv venv --quiet --python=$PYTHON $VENV \
&& cd $REMOTE_DIR && ~/.local/bin/uv pip install --quiet --python $VENV/bin/python -e '.[tpu]'"
    ;;
  mount)
    [[ "$BUCKET" =~ ^[a-z0-9][a-z0-9._-]*[a-z0-9]$ ]] || die "--bucket (or FP_TPU_BUCKET) must name a bucket, e.g. my-bucket, got '$BUCKET'"
    # gcsfuse from Google's apt repository, unless the image has it; mounted once per worker.
    on_all_workers "if ! command -v gcsfuse > /dev/null; then \
curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc > /dev/null \
&& echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main\" \
| sudo tee /etc/apt/sources.list.d/gcsfuse.list > /dev/null && sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse; fi \
&& sudo mkdir -p /gcs/$BUCKET && sudo chown \$(id -u):\$(id -g) /gcs/$BUCKET \
&& (mountpoint -q /gcs/$BUCKET || gcsfuse --implicit-dirs $BUCKET /gcs/$BUCKET)"
    ;;
  train|sample)
    [[ ${#ARGS[@]} -gt 0 ]] || die "give fp-$COMMAND's flags after --, e.g. $0 $COMMAND -- --config=configs/wan_14b.py"
    LOG="~/fp-$COMMAND.log"
    QUOTED=$(printf '%q ' "${ARGS[@]}")
    on_all_workers "cd $REMOTE_DIR && FP_NUM_PROCESSES=auto nohup $VENV/bin/fp-$COMMAND ${QUOTED% } \
> $LOG 2>&1 < /dev/null &"
    # Not `nodes | head -n 1`: under pipefail, head's early exit can kill nodes with SIGPIPE.
    mapfile -t NODES < <(nodes)
    FIRST=${NODES[0]}
    run gcloud compute tpus tpu-vm ssh "$FIRST" "${COMMON[@]}" --worker=0 --command="tail -n +1 -F $LOG"
    ;;
  status)
    if [[ "$QUEUED" == 1 ]]; then
      run gcloud compute tpus queued-resources describe "$NAME" "${COMMON[@]}"
    fi
    for node in $(nodes); do
      run gcloud compute tpus tpu-vm describe "$node" "${COMMON[@]}" --format="value(name,acceleratorType,state,health)"
    done
    on_all_workers "pgrep -af 'fp-(train|sample)' || echo \"\$(hostname): no fp-train or fp-sample running\""
    ;;
  delete)
    if [[ "$QUEUED" == 1 ]]; then
      run gcloud compute tpus queued-resources delete "$NAME" "${COMMON[@]}" --force --quiet
    else
      run gcloud compute tpus tpu-vm delete "$NAME" "${COMMON[@]}" --quiet
    fi
    ;;
esac
