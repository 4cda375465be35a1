"""Frozen runs are known by folder and step: a run trained further in the same folder is another."""
import json
import shutil

import pytest

from data_pipeline.errors import InputError
from fp_jax.train import frozen
from tests.run_helpers import saved_run, train_config


def test_a_frozen_run_trained_further_is_refused_by_a_resumed_run_and_by_a_latent_cache(data_dir, tmp_path):
  vae_run = tmp_path / "vae"
  saved_run(train_config(data_dir, "vae"), vae_run, 1)
  config = train_config(data_dir, "dit")
  config.frozen.vae, config.frozen.motion = str(vae_run), ""
  runs = frozen.frozen_runs(config)
  assert runs == {"vae": {"path": str(vae_run), "step": 1}}
  workdir = tmp_path / "dit"
  workdir.mkdir()
  frozen.record(str(workdir), config)
  assert json.loads((workdir / frozen.RECORD).read_text()) == runs
  frozen.check_resumed_under_the_same(str(workdir), config)
  cache = {"frozen": {"vae": str(vae_run), "motion": ""}, "frozen_runs": runs}
  frozen.check_cache("latents", cache, config)
  # The same folder spelled another way is the same run.
  config.frozen.vae = str(vae_run) + "/"
  frozen.check_resumed_under_the_same(str(workdir), config)
  shutil.copytree(vae_run / "checkpoints" / "1", vae_run / "checkpoints" / "2")  # trained further
  with pytest.raises(InputError, match=r"was trained under the frozen runs .*'step': 1.*now reads .*'step': 2"):
    frozen.check_resumed_under_the_same(str(workdir), config)
  with pytest.raises(InputError, match=r"the latent cache latents was made with frozen weights .*'step': 1"):
    frozen.check_cache("latents", cache, config)
  # A cache made before the steps were recorded is checked by the folders' names alone.
  frozen.check_cache("latents", {"frozen": {"vae": str(vae_run) + "/", "motion": ""}}, config)
