"""Training tasks, looked up by the config's `task`."""
from data_pipeline.errors import require


def get_task(config):
  from fp_jax.train.tasks import dit_task, identity_task, motion_task, vae_task  # pylint: disable=g-import-not-at-top
  tasks = {"dit": dit_task.DiTTask, "vae": vae_task.VAETask, "motion": motion_task.MotionTask,
           "identity": identity_task.IdentityTask}
  require(config.task in tasks, f"unknown task {config.task!r}; choose from {sorted(tasks)}")
  return tasks[config.task](config)
