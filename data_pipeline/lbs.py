"""Linear blend skinning in the FLAME/SMPL formulation, batched over frames (numpy)."""
import numpy as np


def axis_angle_to_matrix(axis_angle):
  """Rodrigues' formula: [..., 3] axis-angle -> [..., 3, 3] rotation matrices."""
  axis_angle = np.asarray(axis_angle, dtype=np.float64)
  angle = np.linalg.norm(axis_angle, axis=-1, keepdims=True)
  axis = axis_angle / np.maximum(angle, 1e-12)
  x, y, z = np.moveaxis(axis, -1, 0)
  zeros = np.zeros_like(x)
  skew = np.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], axis=-1).reshape(axis.shape[:-1] + (3, 3))
  sin = np.sin(angle)[..., None]
  cos = np.cos(angle)[..., None]
  eye = np.broadcast_to(np.eye(3), skew.shape)
  return eye + sin * skew + (1.0 - cos) * (skew @ skew)


def matrix_to_axis_angle(matrix):
  """Inverse of `axis_angle_to_matrix` for rotations of angle < pi."""
  matrix = np.asarray(matrix, dtype=np.float64)
  cos = np.clip((np.trace(matrix, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
  angle = np.arccos(cos)
  vec = np.stack([
      matrix[..., 2, 1] - matrix[..., 1, 2],
      matrix[..., 0, 2] - matrix[..., 2, 0],
      matrix[..., 1, 0] - matrix[..., 0, 1],
  ], axis=-1)
  sin = np.sin(angle)
  scale = np.where(sin > 1e-8, angle / np.maximum(2.0 * sin, 1e-12), 0.5)
  return vec * scale[..., None]


def blend_shapes(coefficients, dirs):
  """[T, K] coefficients, [V, 3, K] directions -> [T, V, 3] offsets."""
  return np.einsum("tk,vck->tvc", coefficients, dirs)


def linear_blend_skinning(v_shaped, joint_rotations, joints, parents, weights, posedirs):
  """Poses shaped vertices.

  Args:
    v_shaped: [T, V, 3] template plus shape and expression offsets.
    joint_rotations: [T, J, 3, 3] local joint rotations.
    joints: [T, J, 3] rest joint locations (regressed from `v_shaped`).
    parents: [J] parent index per joint, -1 for the root; parents precede children.
    weights: [V, J] skinning weights.
    posedirs: [V, 3, 9 * (J - 1)] pose-corrective blend shapes.
  Returns:
    [T, V, 3] posed vertices and [T, J, 4, 4] world transforms of the joints.
  """
  num_frames, num_joints = joint_rotations.shape[:2]
  eye = np.eye(3)
  pose_feature = (joint_rotations[:, 1:] - eye).reshape(num_frames, -1)
  v_posed = v_shaped + np.einsum("tp,vcp->tvc", pose_feature, posedirs)

  world = np.zeros((num_frames, num_joints, 4, 4))
  for j in range(num_joints):
    local = np.zeros((num_frames, 4, 4))
    local[:, :3, :3] = joint_rotations[:, j]
    local[:, 3, 3] = 1.0
    parent = parents[j]
    if parent < 0:
      local[:, :3, 3] = joints[:, j]
      world[:, j] = local
    else:
      local[:, :3, 3] = joints[:, j] - joints[:, parent]
      world[:, j] = world[:, parent] @ local
  # Skinning transforms move each joint's rest position to its posed position.
  skin = world.copy()
  skin[:, :, :3, 3] -= np.einsum("tjab,tjb->tja", world[:, :, :3, :3], joints)
  per_vertex = np.einsum("vj,tjab->tvab", weights, skin)
  posed = np.einsum("tvab,tvb->tva", per_vertex[..., :3, :3], v_posed) + per_vertex[..., :3, 3]
  return posed, world
