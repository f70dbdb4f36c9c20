"""Absolute actions with the 6-D rotation (dpjax.data.rotation), checked against scipy's rotations."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dpjax.data import rotation

# Random rotations and the hard cases: no rotation, a tiny one, half turns about an axis and a diagonal, near pi.
EDGES = np.array([[0, 0, 0], [1e-9, -2e-9, 0], [np.pi, 0, 0], [0, np.pi - 1e-7, 0],
                  np.full(3, np.pi / np.sqrt(3)), [0, 0, -3.0]])
VECTORS = np.concatenate([Rotation.random(500, random_state=0).as_rotvec(), EDGES])


def test_axis_angle_to_matrix_is_scipys():
  np.testing.assert_allclose(rotation.axis_angle_to_matrix(VECTORS), Rotation.from_rotvec(VECTORS).as_matrix(),
                             atol=1e-12)


def test_matrix_to_axis_angle_inverts_with_angles_up_to_pi():
  vectors = rotation.matrix_to_axis_angle(rotation.axis_angle_to_matrix(VECTORS))
  np.testing.assert_allclose(rotation.axis_angle_to_matrix(vectors), rotation.axis_angle_to_matrix(VECTORS),
                             atol=1e-12)
  assert np.all(np.linalg.norm(vectors, axis=-1) <= np.pi + 1e-12)
  below_pi = np.linalg.norm(VECTORS, axis=-1) < np.pi - 1e-3   # a half turn is the same about +axis and -axis
  np.testing.assert_allclose(vectors[below_pi], VECTORS[below_pi], atol=1e-12)


def test_6d_is_the_first_two_rows_and_gram_schmidt_inverts_it():
  quarter_turn_about_z = rotation.axis_angle_to_matrix(np.array([0, 0, np.pi / 2]))
  np.testing.assert_allclose(rotation.matrix_to_rotation_6d(quarter_turn_about_z), [0, -1, 0, 1, 0, 0], atol=1e-15)
  matrices = rotation.axis_angle_to_matrix(VECTORS)
  np.testing.assert_allclose(rotation.rotation_6d_to_matrix(rotation.matrix_to_rotation_6d(matrices)), matrices,
                             atol=1e-12)
  # A network's output is not on the manifold: any 6 numbers with independent halves still give a rotation.
  noisy = rotation.rotation_6d_to_matrix(np.random.default_rng(0).normal(size=(100, 6)))
  np.testing.assert_allclose(noisy @ np.swapaxes(noisy, -1, -2), np.broadcast_to(np.eye(3), noisy.shape),
                             atol=1e-12)
  np.testing.assert_allclose(np.linalg.det(noisy), 1.0, atol=1e-12)


@pytest.mark.parametrize("arms, batch", [(1, (40,)), (2, (4, 10))])
def test_abs_actions_round_trip_per_arm(arms, batch):
  rng = np.random.default_rng(arms)
  per_arm = [np.concatenate([rng.normal(size=batch + (3,)), Rotation.random(int(np.prod(batch)), random_state=arms)
                             .as_rotvec().reshape(batch + (3,)), rng.uniform(-1, 1, batch + (1,))], -1)
             for _ in range(arms)]
  actions = np.concatenate(per_arm, -1)
  converted = rotation.abs_actions_to_6d(actions)
  assert converted.shape == batch + (10 * arms,) and converted.dtype == np.float32
  for arm, values in enumerate(per_arm):   # position, rows of the rotation, gripper per arm
    got = converted[..., 10 * arm:10 * (arm + 1)]
    np.testing.assert_allclose(got[..., :3], values[..., :3], rtol=1e-6)
    np.testing.assert_allclose(got[..., 3:9], Rotation.from_rotvec(values[..., 3:6].reshape(-1, 3)).as_matrix()
                               [:, :2].reshape(batch + (6,)), atol=1e-6)
    np.testing.assert_allclose(got[..., 9], values[..., 6], rtol=1e-6)
  np.testing.assert_allclose(rotation.abs_actions_from_6d(converted), actions, atol=1e-5)


@pytest.mark.parametrize("function, width, message", [
    (rotation.abs_actions_to_6d, 8, r"Absolute actions have 8 values per step; expected 7 per arm \(7, 14, \.\.\.\)"),
    (rotation.abs_actions_to_6d, 0, r"Absolute actions have 0 values"),
    (rotation.abs_actions_from_6d, 7, r"6-D rotation actions have 7 values per step; expected 10 per arm"),
])
def test_wrong_widths_name_the_expected_ones(function, width, message):
  with pytest.raises(ValueError, match=message):
    function(np.zeros((3, width)))
