"""Absolute end-effector actions with a 6-D rotation, as the original Diffusion Policy's `abs_action` runs.

robomimic's absolute actions are [..., 7] per arm: position (3), axis-angle rotation (3), gripper (1). An
axis-angle vector jumps where the angle wraps at pi, so a network regressing it sees the same pose at two far
apart values; the continuous 6-D representation (Zhou et al., 2019) does not. The original trains on
[..., 10] per arm (position, the rotation matrix's first two rows, gripper) and maps the policy's outputs back
before the robot's controller reads them:

    actions_6d = abs_actions_to_6d(actions)          # [N, 7k] -> [N, 10k], k arms (training data)
    actions = abs_actions_from_6d(policy_output)     # [..., 10k] -> [..., 7k] (at deployment)

The conventions are pytorch3d's, which the original calls: the 6 numbers are the matrix's first two rows, and
the inverse orthonormalises them by Gram-Schmidt, so any 6 numbers with independent halves give a rotation.
numpy only (float64 inside), so a robot computer needs nothing else.
"""
import numpy as np

POSITION, AXIS_ANGLE, ROTATION_6D, GRIPPER = 3, 3, 6, 1
ARM_7D = POSITION + AXIS_ANGLE + GRIPPER     # robomimic's absolute action per arm
ARM_10D = POSITION + ROTATION_6D + GRIPPER   # the same with the 6-D rotation

_SMALL_ANGLE = 1e-6


def _skew(v: np.ndarray) -> np.ndarray:
  """[..., 3] -> the cross-product matrices [..., 3, 3]."""
  zero = np.zeros_like(v[..., 0])
  return np.stack([np.stack([zero, -v[..., 2], v[..., 1]], -1),
                   np.stack([v[..., 2], zero, -v[..., 0]], -1),
                   np.stack([-v[..., 1], v[..., 0], zero], -1)], -2)


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
  """Rotation vectors [..., 3] (axis times angle in radians) -> rotation matrices [..., 3, 3] (Rodrigues)."""
  v = np.asarray(axis_angle, np.float64)
  angle = np.linalg.norm(v, axis=-1)[..., None, None]
  small = angle < _SMALL_ANGLE
  safe = np.where(small, 1.0, angle)
  # sin(a)/a and (1 - cos(a))/a^2, by their Taylor series near 0.
  sin_term = np.where(small, 1.0 - angle ** 2 / 6.0, np.sin(safe) / safe)
  cos_term = np.where(small, 0.5 - angle ** 2 / 24.0, (1.0 - np.cos(safe)) / safe ** 2)
  k = _skew(v)
  return np.eye(3) + sin_term * k + cos_term * (k @ k)


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
  """Rotation matrices [..., 3, 3] -> rotation vectors [..., 3] with angles in [0, pi].

  Through the unit quaternion (Shepperd's method, the largest of its four components first), which stays
  accurate at angles near 0 and near pi, where the matrix's antisymmetric part vanishes.
  """
  m = np.asarray(matrix, np.float64)
  trace = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
  # Four candidate quaternions (w, x, y, z), each exact where its own component is the largest.
  candidates = np.stack([
      np.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
      np.stack([m[..., 2, 1] - m[..., 1, 2], 1 + 2 * m[..., 0, 0] - trace, m[..., 0, 1] + m[..., 1, 0],
                m[..., 0, 2] + m[..., 2, 0]], -1),
      np.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 + 2 * m[..., 1, 1] - trace,
                m[..., 1, 2] + m[..., 2, 1]], -1),
      np.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                1 + 2 * m[..., 2, 2] - trace], -1)], -2)                     # [..., 4 candidates, 4]
  diagonal = np.stack([trace, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
  best = np.argmax(diagonal, axis=-1)[..., None, None]
  quaternion = np.take_along_axis(candidates, best, axis=-2)[..., 0, :]
  quaternion /= np.linalg.norm(quaternion, axis=-1, keepdims=True)
  quaternion *= np.where(quaternion[..., :1] < 0, -1.0, 1.0)              # w >= 0: angle in [0, pi]
  w, xyz = quaternion[..., 0], quaternion[..., 1:]
  sin_half = np.linalg.norm(xyz, axis=-1)
  angle = 2.0 * np.arctan2(sin_half, w)
  small = sin_half < _SMALL_ANGLE
  scale = np.where(small, 2.0 / np.where(small, w, 1.0), angle / np.where(small, 1.0, sin_half))
  return xyz * scale[..., None]


def matrix_to_rotation_6d(matrix: np.ndarray) -> np.ndarray:
  """Rotation matrices [..., 3, 3] -> [..., 6]: the first two rows (pytorch3d's convention)."""
  m = np.asarray(matrix, np.float64)
  return m[..., :2, :].reshape(m.shape[:-2] + (6,))


def rotation_6d_to_matrix(rotation_6d: np.ndarray) -> np.ndarray:
  """[..., 6] -> rotation matrices [..., 3, 3] by Gram-Schmidt on the two 3-vectors (the rows)."""
  d6 = np.asarray(rotation_6d, np.float64)
  first = d6[..., :3] / np.linalg.norm(d6[..., :3], axis=-1, keepdims=True)
  second = d6[..., 3:] - np.sum(first * d6[..., 3:], axis=-1, keepdims=True) * first
  second /= np.linalg.norm(second, axis=-1, keepdims=True)
  return np.stack([first, second, np.cross(first, second)], -2)


def _arms(actions: np.ndarray, width: int, name: str) -> np.ndarray:
  """[..., k * width] -> [..., k, width], or a ValueError naming the expected widths."""
  actions = np.asarray(actions)
  if actions.ndim < 1 or actions.shape[-1] == 0 or actions.shape[-1] % width:
    raise ValueError(f"{name} have {actions.shape[-1] if actions.ndim else 0} values per step; expected {width} "
                     f"per arm ({width}, {2 * width}, ...).")
  return actions.reshape(actions.shape[:-1] + (actions.shape[-1] // width, width))


def abs_actions_to_6d(actions: np.ndarray) -> np.ndarray:
  """Absolute actions [..., 7k] (per arm: position, axis-angle, gripper) -> float32 [..., 10k] (per arm:
  position, 6-D rotation, gripper), as the original's `_convert_actions(abs_action=True)`."""
  arms = _arms(actions, ARM_7D, "Absolute actions")
  rotation = matrix_to_rotation_6d(axis_angle_to_matrix(arms[..., POSITION:POSITION + AXIS_ANGLE]))
  out = np.concatenate([arms[..., :POSITION], rotation, arms[..., -GRIPPER:]], -1)
  return out.reshape(out.shape[:-2] + (-1,)).astype(np.float32)


def abs_actions_from_6d(actions: np.ndarray) -> np.ndarray:
  """The inverse: [..., 10k] -> float32 [..., 7k] for the robot's controller, as the original's
  `undo_transform_action`. Any 6 numbers with independent halves map to a rotation (Gram-Schmidt)."""
  arms = _arms(actions, ARM_10D, "6-D rotation actions")
  rotation = matrix_to_axis_angle(rotation_6d_to_matrix(arms[..., POSITION:POSITION + ROTATION_6D]))
  out = np.concatenate([arms[..., :POSITION], rotation, arms[..., -GRIPPER:]], -1)
  return out.reshape(out.shape[:-2] + (-1,)).astype(np.float32)
