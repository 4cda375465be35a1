"""`report.json` and `report.md`: the evaluation table, with the command and seed behind it."""
import json
import os

from data_pipeline import durable

METRICS = (("psnr", "PSNR (dB)", "higher"), ("ssim", "SSIM", "higher"),
           ("pose_error_deg", "pose error (deg)", "lower"), ("expression_error", "expression error", "lower"),
           ("expression_coefficient_error", "expression coefficients (rms)", "lower"),
           ("view_normal_error_deg", "view: normal error (deg)", "lower"), ("view_mask_iou", "view: head IoU", "higher"),
           ("lpips", "LPIPS", "lower"), ("identity_similarity", "identity similarity", "higher"))


def _write_both(texts):
  """Each `{path: text}` written to a temporary name first, then all renamed one after the other:
  a failure while writing (a full disk, a text that cannot be made) leaves the old reports."""
  temporaries = {path: path + ".partial" for path in texts}
  try:
    for path, text in texts.items():
      with open(temporaries[path], "w") as handle:
        handle.write(text)
        durable.flush_to_disk(handle)
  except BaseException:
    for temporary in temporaries.values():
      if os.path.exists(temporary):
        os.remove(temporary)
    raise
  for path, temporary in temporaries.items():
    durable.replace(temporary, path)


def markdown(summary, rows, command, seed):
  shown = [metric for metric in METRICS if metric[0] in summary]  # LPIPS only when scored
  methods = [("model", "")] + [(f"without {m[len('without_'):-len('_psnr')]}", m[:-len("psnr")])
                                for m in summary if m.startswith("without_") and m.endswith("_psnr")]
  methods.append(("portrait repeated (baseline)", "baseline_"))
  if "warp_psnr" in summary:
    methods.append(("portrait warped by the tracked mesh, through the VAE", "warp_"))
  if "vae_ceiling_psnr" in summary:
    methods.append(("real clip through the VAE (ceiling)", "vae_ceiling_"))
  lines = ["# Evaluation: self-reenactment on held-out identities", "",
           f"{_count(len(rows), 'clip', 'clips')} of {_count(len({row['identity'] for row in rows}), 'person', 'people')}; "
           f"reproduce with `{command}` (seed {seed}).", "",
           "| method | " + " | ".join(f"{label} ({better})" for _, label, better in shown) + " |",
           "|---|" + "---|" * len(shown)]
  for name, prefix in methods:
    lines.append(f"| {name} | " + " | ".join(f"{summary[prefix + key]:.3f}" for key, _, _ in shown) + " |")
  lines += ["", f"PSNR over the baseline: {summary['psnr'] - summary['baseline_psnr']:+.2f} dB (bar: +3 dB); "
            f"pose error over the baseline's: {summary['pose_error_deg'] / max(summary['baseline_pose_error_deg'], 1e-9):.2f}x "
            "(bar: < 0.5x).", ""]
  if "identity_impostor_similarity" in summary:
    lines += [f"Identity similarity is the cosine of the identity embedding of each generated face with the "
              f"portrait's; another evaluated person's portrait scores {summary['identity_impostor_similarity']:.3f}.", ""]
  return "\n".join(lines)


def _count(number, one, many):
  return f"{number} {one if number == 1 else many}"


def write(out, summary, rows, command, seed):
  """Writes `out` (JSON: summary keys at the top, per-clip rows, command, seed) and `out`'s .md."""
  payload = dict(summary, clips=rows, command=command, seed=seed)
  markdown_path = os.path.splitext(out)[0] + ".md"
  # allow_nan=False: a score that is not finite (a frame identical to its target has infinite
  # PSNR) fails here, rather than writing a report.json no JSON reader accepts.
  _write_both({out: json.dumps(payload, indent=1, sort_keys=True, allow_nan=False),
               markdown_path: markdown(summary, rows, command, seed)})
  return out, markdown_path
