"""The identity embedding: its examples, its contrastive loss, its scores, its run and fp-eval's use."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from data_pipeline import expression_twins, fresh_people, input_pipeline
from data_pipeline.errors import InputError
from data_pipeline.records import ClipRecords
from fp_jax.eval import evaluate, identity, report
from fp_jax.train import trainer as trainer_lib
from fp_jax.train.tasks import identity_task
from tests.test_input_pipeline import make_config
from tests.run_helpers import run, step_losses, train_config


def supervised_contrastive_by_loops(embeddings, temperature):
  """The loss written out crop by crop (Khosla et al. 2020, the mean over positives outside the log)."""
  people, views, _ = embeddings.shape
  flat = embeddings.reshape(people * views, -1).astype(np.float64)
  flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
  total = 0.0
  for i in range(len(flat)):
    others = [j for j in range(len(flat)) if j != i]
    denominator = sum(np.exp(flat[i] @ flat[j] / temperature) for j in others)
    positives = [j for j in others if j // views == i // views]
    total += -sum(np.log(np.exp(flat[i] @ flat[p] / temperature) / denominator) for p in positives) / len(positives)
  return total / len(flat)


def test_the_contrastive_loss_is_the_supervised_contrastive_loss():
  rng = np.random.default_rng(0)
  for people, views in ((4, 2), (3, 3)):
    embeddings = rng.normal(size=(people, views, 5)).astype(np.float32)
    loss, metrics = identity_task.contrastive_loss(jnp.asarray(embeddings), 0.3)
    assert float(loss) == pytest.approx(supervised_contrastive_by_loops(embeddings, 0.3), rel=1e-5)
    unit = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
    positive = np.mean([unit[p, a] @ unit[p, b] for p in range(people) for a in range(views) for b in range(views) if a != b])
    assert float(metrics["positive_cosine"]) == pytest.approx(positive, rel=1e-5)


def test_the_loss_rewards_embeddings_that_keep_each_persons_views_together():
  rng = np.random.default_rng(1)
  centres = rng.normal(size=(6, 1, 8))
  grouped = centres + 0.05 * rng.normal(size=(6, 2, 8))
  mixed = grouped.reshape(12, 8)[rng.permutation(12)].reshape(6, 2, 8)
  grouped_loss, grouped_metrics = identity_task.contrastive_loss(jnp.asarray(grouped), 0.1)
  mixed_loss, _ = identity_task.contrastive_loss(jnp.asarray(mixed), 0.1)
  assert float(grouped_loss) < float(mixed_loss)
  assert float(grouped_metrics["retrieval"]) == 1.0
  assert float(grouped_metrics["positive_cosine"]) > 0.95 > float(grouped_metrics["negative_cosine"])


def test_verification_scores_count_the_pairs_they_say():
  rng = np.random.default_rng(2)
  people = np.repeat(np.arange(4), 6)
  clips = np.repeat(np.arange(8), 3)  # two clips a person, three crops a clip
  embeddings = rng.normal(size=(4, 1, 6))[people, 0] + 1.5 * rng.normal(size=(24, 6))
  scores = identity.verification(embeddings, people, clips)
  unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  genuine = [unit[i] @ unit[j] for i in range(24) for j in range(i + 1, 24) if people[i] == people[j] and clips[i] != clips[j]]
  impostor = [unit[i] @ unit[j] for i in range(24) for j in range(i + 1, 24) if people[i] != people[j]]
  wins = np.mean([(g > m) + 0.5 * (g == m) for g in genuine for m in impostor])
  assert scores["auc"] == pytest.approx(wins, abs=1e-12)
  assert scores["genuine_cosine"] == pytest.approx(np.mean(genuine)) and scores["impostor_cosine"] == pytest.approx(np.mean(impostor))
  nearest = [max((j for j in range(24) if clips[j] != clips[i]), key=lambda j: unit[i] @ unit[j]) for i in range(24)]
  assert scores["identification"] == pytest.approx(np.mean(people[nearest] == people))
  # Scores that separate the two kinds fully: AUC 1, no equal error; reversed, AUC 0.
  assert identity.roc_auc([0.9, 0.8], [0.1, 0.2, 0.3]) == 1.0 and identity.equal_error_rate([0.9, 0.8], [0.1, 0.3]) == 0.0
  assert identity.roc_auc([0.1], [0.9]) == 0.0 and identity.roc_auc([0.5], [0.5]) == 0.5
  with pytest.raises(InputError, match="two people or more"):
    identity.verification(embeddings[:6], people[:6], clips[:6])


def test_identity_examples_are_one_new_person_in_several_views(data_dir, monkeypatch):
  """`input.identity_views`: each example is one person drawn from (seed, split, index), seen K
  times, each view with its own expression, pose, camera, light and backdrop."""
  records = ClipRecords(data_dir, "tiny", "train")
  seen = []
  render = expression_twins.twin_crops
  monkeypatch.setattr(expression_twins, "twin_crops",
                      lambda *args, person=None, **kwargs: seen.append(person) or render(*args, person=person, **kwargs))
  make = fresh_people.MakeFreshExample(records, make_config(data_dir, fresh_people=8, identity_views=3))
  first = make.random_map(2, None)
  assert first["views"].shape == (3, 16, 16, 3) and first["head_pose"].shape == (3, 10)
  assert seen[0] is seen[1] is seen[2]  # one person for the three views ...
  differ = lambda a, b: np.mean(np.abs(a.astype(float) - b.astype(float))) > 5
  assert differ(first["views"][0], first["views"][1]) and differ(first["views"][1], first["views"][2])
  assert not np.allclose(first["head_pose"][0], first["head_pose"][1])  # ... each in a view of its own
  second = make.random_map(3, None)
  assert seen[3] is not seen[0] and not np.array_equal(seen[3].shape, seen[0].shape)  # a new person an example
  again = make.random_map(2, None)
  np.testing.assert_array_equal(again["views"], first["views"])
  batch = next(input_pipeline.make_iterator(make_config(data_dir, fresh_people=8, identity_views=2, global_batch_size=4)))
  assert batch["views"].shape == (4, 2, 16, 16, 3)
  del second
  for bad, message in (({"identity_views": 1}, "identity_views must be 0"),
                       ({"identity_views": 2, "expression_twins": 1}, "do not go together")):
    with pytest.raises(InputError, match=message):
      fresh_people.MakeFreshExample(records, make_config(data_dir, fresh_people=8, **bad))


def identity_config(data_dir, **overrides):
  settings = {"input.fresh_people": 16, "input.fresh_people_cache": 0, "input.global_batch_size": 8,
              "identity.widths": (8, 16), "identity.embedding_dim": 8}
  return train_config(data_dir, "identity", **{**settings, **overrides})


def test_the_identity_task_trains_and_validates_as_the_demo_does(data_dir, tmp_path, capsys):
  assert tiny.get_config("identity").input.identity_views >= 2  # what the demo runs
  config = identity_config(data_dir, total_steps=3, checkpoint_every=3, **{"eval.every": 3, "eval.batches": 1,
                                                                           "identity_loss.blur_share": 0.5})
  state = run(config, tmp_path)
  assert int(state["step"]) == 3
  out = capsys.readouterr().out
  losses = step_losses(out)
  assert len(losses) == 3 and np.all(np.isfinite(losses))
  assert "validation/retrieval" in out
  with pytest.raises(InputError, match="the identity task learns on fresh people seen several times"):
    trainer_lib.Trainer(identity_config(data_dir, **{"input.fresh_people": 0}), str(tmp_path / "other"))
  with pytest.raises(InputError, match="with input.identity_views to the identity task"):
    trainer_lib.Trainer(identity_config(data_dir, **{"input.identity_views": 0}), str(tmp_path / "other"))


def test_each_portrait_is_scored_against_the_other_peoples_portraits():
  rows = [{"identity": 5}, {"identity": 5}, {"identity": 9}]
  portraits = [np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.array([0.6, 0.8])]
  evaluate._impostor_similarity(rows, portraits)  # pylint: disable=protected-access
  assert [row["identity_impostor_similarity"] for row in rows] == pytest.approx([0.6, 0.6, 0.6])
  alone = [{"identity": 5}, {"identity": 5}]
  evaluate._impostor_similarity(alone, portraits[:2])  # pylint: disable=protected-access
  assert "identity_impostor_similarity" not in alone[0]  # one person: nobody else to score
  summary = {"psnr": 20.0, "baseline_psnr": 18.0, "pose_error_deg": 2.0, "baseline_pose_error_deg": 5.0,
             "identity_similarity": 0.8, "baseline_identity_similarity": 0.95, "identity_impostor_similarity": 0.6}
  text = report.markdown(summary, [{"identity": 5}, {"identity": 9}], "fp-eval ...", 0)
  assert "| identity similarity (higher) |" in text and "| 0.800 |" in text
  assert "another evaluated person's portrait scores 0.600" in text


def test_an_identity_run_exports_to_pytorch_and_imports_back(data_dir, tmp_path):
  """fp-export of an identity run: the PyTorch mirror embeds as the run does; fp-import reads it back."""
  import torch  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from fp_jax.export import export_run, import_run, torch_motion  # pylint: disable=g-import-not-at-top
  from fp_jax.train import checkpoints  # pylint: disable=g-import-not-at-top
  from fp_jax.train.tasks import common  # pylint: disable=g-import-not-at-top
  from tests import dit_helpers as helpers  # pylint: disable=g-import-not-at-top
  from tests.run_helpers import saved_run  # pylint: disable=g-import-not-at-top
  config = identity_config(data_dir)
  saved_run(config, tmp_path / "run", 5)
  export_run.export_run(str(tmp_path / "run"), str(tmp_path / "exported"), ema=True)
  params, _, _ = checkpoints.read_run(str(tmp_path / "run"), None, "ema")
  ours = common.make_identity_encoder(config, nnx.Rngs(0))
  checkpoints.load_into(ours, params)
  crops = np.random.default_rng(6).integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)
  want = np.asarray(nnx.jit(lambda model, x: model(x))(ours, jnp.asarray(crops)))
  theirs = torch_motion.IdentityEncoder.from_export(tmp_path / "exported")
  with torch.no_grad():
    got = theirs(torch.from_numpy(crops)).numpy()
  assert got.shape == want.shape == (2, 3, 8) and helpers.relative_error(got, want) <= 1e-4
  import_run.import_weights(str(tmp_path / "exported" / "model.safetensors"), config, str(tmp_path / "imported"))
  imported, step, _ = checkpoints.read_run(str(tmp_path / "imported"), None, "params")
  assert step == 0
  for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves_with_path(imported)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, err_msg=str(path))
