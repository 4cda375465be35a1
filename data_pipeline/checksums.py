"""SHA-256 of files, read in blocks (checkpoint manifests, latent caches)."""
import hashlib


def sha256_file(path):
  digest = hashlib.sha256()
  with open(path, "rb") as handle:
    for block in iter(lambda: handle.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()
