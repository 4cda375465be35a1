"""launch/tpu_vm.sh --dry-run: the exact gcloud commands for a pod slice, queued and multi-slice."""
import os
import subprocess

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch", "tpu_vm.sh")


def dry_run(*args, expect_status=0):
  result = subprocess.run(["bash", SCRIPT, "--dry-run", *args], capture_output=True, text=True, check=False,
                          env=dict(os.environ, FP_TPU_NAME="", FP_TPU_ZONE="", TMPDIR="/tmp"))
  assert result.returncode == expect_status, result.stderr
  return result.stdout.splitlines() if expect_status == 0 else result.stderr.strip()


POD = ("--name=fp-pod", "--zone=us-east5-a", "--accelerator=v5p-128")


def test_single_slice_lifecycle():
  assert dry_run(*POD, "create") == [
      "gcloud compute tpus tpu-vm create fp-pod --zone=us-east5-a --accelerator-type=v5p-128 "
      "--version=v2-alpha-tpuv5"]
  archive, copy, install = dry_run(*POD, "setup")
  assert archive.startswith("git -C ") and archive.endswith(" archive --format=tar.gz "
                                                            "--output=/tmp/factorportrait-fp-pod.tar.gz HEAD")
  assert copy == ("gcloud compute tpus tpu-vm scp /tmp/factorportrait-fp-pod.tar.gz fp-pod:factorportrait.tar.gz "
                  "--zone=us-east5-a --worker=all")
  assert install.startswith("gcloud compute tpus tpu-vm ssh fp-pod --zone=us-east5-a --worker=all '--command=")
  assert "pip install --quiet --python ~/fp-venv/bin/python -e '\\''.[tpu]'\\''" in install
  start, stream = dry_run(*POD, "train", "--", "--config=configs/wan_14b.py", "--workdir=/gcs/b/runs/dit",
                          "--config.optim.learning_rate=1e-4")
  assert start == ("gcloud compute tpus tpu-vm ssh fp-pod --zone=us-east5-a --worker=all '--command=cd "
                   "~/factorportrait && FP_NUM_PROCESSES=auto nohup ~/fp-venv/bin/fp-train "
                   "--config=configs/wan_14b.py --workdir=/gcs/b/runs/dit --config.optim.learning_rate=1e-4 "
                   "> ~/fp-train.log 2>&1 < /dev/null &'")
  assert stream == ("gcloud compute tpus tpu-vm ssh fp-pod --zone=us-east5-a --worker=0 "
                    "'--command=tail -n +1 -F ~/fp-train.log'")
  describe, processes = dry_run(*POD, "status")
  assert describe.startswith("gcloud compute tpus tpu-vm describe fp-pod --zone=us-east5-a ")
  assert processes.startswith("gcloud compute tpus tpu-vm ssh fp-pod --zone=us-east5-a --worker=all ")
  assert dry_run(*POD, "delete") == ["gcloud compute tpus tpu-vm delete fp-pod --zone=us-east5-a --quiet"]


def test_multislice_through_a_queued_resource():
  pods = ("--name=fp", "--zone=z", "--project=p", "--accelerator=v6e-256", "--slices=2")
  assert dry_run(*pods, "--spot", "create") == [
      "gcloud compute tpus queued-resources create fp --zone=z --project=p --node-count=2 --node-prefix=fp "
      "--accelerator-type=v6e-256 --runtime-version=v2-alpha-tpuv6e --spot"]
  lines = dry_run(*pods, "sample", "--", "--config=configs/wan_1_3b.py", "--out=a b")
  # Every worker of each slice starts the job; the log streamed is slice 0's worker 0.
  assert [line.split(" '--command=")[0] for line in lines] == [
      "gcloud compute tpus tpu-vm ssh fp-0 --zone=z --project=p --worker=all",
      "gcloud compute tpus tpu-vm ssh fp-1 --zone=z --project=p --worker=all",
      "gcloud compute tpus tpu-vm ssh fp-0 --zone=z --project=p --worker=0"]
  assert "fp-sample --config=configs/wan_1_3b.py --out=a\\ b >" in lines[0]
  assert dry_run(*pods, "delete") == ["gcloud compute tpus queued-resources delete fp --zone=z --project=p "
                                      "--force --quiet"]
  assert dry_run("--name=one", "--zone=z", "--accelerator=v5p-8", "--queued", "create") == [
      "gcloud compute tpus queued-resources create one --zone=z --node-id=one --accelerator-type=v5p-8 "
      "--runtime-version=v2-alpha-tpuv5"]


@pytest.mark.parametrize("args, message", [
    (("--zone=z", "create"), "error: --name (or FP_TPU_NAME) is required"),
    (("--name=a", "--zone=z", "launch"), "error: unknown command 'launch'"),
    (("--name=a", "--zone=z", "train"), "error: give fp-train's flags after --"),
    (("--name=a", "--zone=z", "--slices=0", "status"), "error: --slices must be a positive integer"),
])
def test_mistakes_are_one_line_errors(args, message):
  stderr = dry_run(*args, expect_status=2)
  assert stderr.startswith(message) and len(stderr.splitlines()) == 1


def test_mount_puts_the_bucket_at_gcs_on_every_worker():
  (line,) = dry_run("--name=fp-pod", "--zone=z", "--bucket=my-bucket", "mount")
  assert line.startswith("gcloud compute tpus tpu-vm ssh fp-pod --zone=z --worker=all '--command=if ! command -v gcsfuse")
  assert line.endswith("&& (mountpoint -q /gcs/my-bucket || gcsfuse --implicit-dirs my-bucket /gcs/my-bucket)'")
  remote = line.split("'--command=", 1)[1][:-1]
  assert subprocess.run(["bash", "-n", "-c", remote], check=False).returncode == 0  # the worker's shell parses it
  assert dry_run("--name=fp-pod", "--zone=z", "--bucket=gs://my-bucket", "mount", expect_status=2) == (
      "error: --bucket (or FP_TPU_BUCKET) must name a bucket, e.g. my-bucket, got 'gs://my-bucket'")
