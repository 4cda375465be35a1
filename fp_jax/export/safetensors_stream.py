"""Writing a .safetensors file tensor by tensor, so an export never holds two copies of a model.

The format is an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the raw little-endian bytes. `safetensors` itself writes from a dict
held whole in memory; here the header is made from a first pass over the tensors' shapes and the
bytes are written as each tensor is converted. The file appears under its name only when complete.
"""
import json
import os
import struct
import sys

import ml_dtypes
import numpy as np

from data_pipeline import durable

DTYPES = {"float32": (np.dtype(np.float32), "F32"), "bfloat16": (np.dtype(ml_dtypes.bfloat16), "BF16"),
          "float16": (np.dtype(np.float16), "F16")}


def write(path, names_and_shapes, tensors, dtype="float32", metadata=None):
  """`names_and_shapes`: [(name, shape)] in file order; `tensors()`: yields (name, array) in the
  same order (called once, after the header is written). Arrays are cast to `dtype`."""
  assert sys.byteorder == "little", "safetensors stores little-endian bytes"
  numpy_dtype, code = DTYPES[dtype]
  header, offset = {}, 0
  for name, shape in names_and_shapes:
    size = int(np.prod(shape)) * numpy_dtype.itemsize
    header[name] = {"dtype": code, "shape": [int(n) for n in shape], "data_offsets": [offset, offset + size]}
    offset += size
  if metadata:
    header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
  encoded = json.dumps(header, separators=(",", ":")).encode()
  encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
  temporary = path + ".partial"
  expected = iter(names_and_shapes)
  with open(temporary, "wb") as f:
    f.write(struct.pack("<Q", len(encoded)))
    f.write(encoded)
    for name, array in tensors():
      want_name, want_shape = next(expected)
      array = np.asarray(array)
      if name != want_name or tuple(array.shape) != tuple(want_shape):
        raise ValueError(f"tensor {name} {array.shape} out of order or shape (expected {want_name} {want_shape})")
      f.write(np.ascontiguousarray(array.astype(numpy_dtype)).tobytes())  # little-endian hosts only
    durable.flush_to_disk(f)
  durable.replace(temporary, path)
