"""Helpers the converters share: dotted names over nested parameter dicts, short key lists."""


def flatten(tree, prefix=""):
  """(dotted path, leaf) for every leaf of a nested dict."""
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from flatten(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def set_dotted(tree, path, value):
  """Sets the leaf at a dotted path (digits index list-like levels keyed by ints)."""
  keys = path.split(".")
  for key in keys[:-1]:
    tree = tree[int(key) if key.isdigit() and int(key) in tree else key]
  tree[keys[-1]] = value


def first_few(names, count=5):
  """The first `count` names, sorted, and how many more there are: for one-line errors."""
  names = sorted(names)
  return ", ".join(names[:count]) + (f" (and {len(names) - count} more)" if len(names) > count else "")


def key_problems(expected, found):
  """"N missing: ..." and "N unexpected: ..." for two sets of names (empty when they agree)."""
  missing, unexpected = set(expected) - set(found), set(found) - set(expected)
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing: {first_few(missing)}")
  if unexpected:
    problems.append(f"{len(unexpected)} unexpected: {first_few(unexpected)}")
  return problems
