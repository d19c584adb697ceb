"""LivePortrait's keypoint maths (facts: docs/face_studio_facts.md §4a and §4d; the reference is
KwaiVGI/LivePortrait src/live_portrait_pipeline.py `execute`, src/live_portrait_wrapper.py
`transform_keypoint`, `stitching`, and src/utils/camera.py `get_rotation_matrix`).

Conventions, checked against both references:
- rotation(pitch, yaw, roll) = Rz(roll) Ry(yaw) Rx(pitch), angles in degrees. LivePortrait builds
  rot_z @ rot_y @ rot_x and returns its transpose; FaceFusion builds
  scipy Rotation.from_euler('xyz', [pitch, yaw, roll], degrees=True), the same Rz Ry Rx, and
  multiplies by its transpose. So with R = rotation(...).T (a matrix that acts on row vectors,
  LivePortrait's "R"), keypoints are `scale * (canonical @ R + expression) + (tx, ty, 0)`.
- The translation's z is never used: LivePortrait adds only t[0:2] to the source keypoints and
  zeroes t_new's z for the driven ones (`t_new[..., 2].fill_(0)`). FaceFusion adds all three to
  both point sets, which cancels in the generator; LivePortrait's way is kept.
- Relative motion (LivePortrait's default, flag_relative_motion True, driving video), frame i
  against the video's first frame d0:  R_new = R_di R_d0^T R_s,  exp_new = exp_s + (exp_di -
  exp_d0),  scale_new = scale_s * scale_di / scale_d0,  t_new = t_s + (t_di - t_d0), z zeroed.
  Its "expression-friendly" option then rescales (x_new - x_new_0) by a motion multiplier
  sqrt(hull volume of x_s) / sqrt(hull volume of x_new_0) and adds x_s; for a portrait photo
  x_new_0 is x_s itself (frame 0 gives R_s, exp_s, scale_s, t_s), so the multiplier is 1 and
  the step is the identity: it is left out.
- Absolute motion (flag_relative_motion False), used here for a single driving photo: R_new =
  R_d, t_new = t_d (z zeroed), scale_new = scale_s, and the expression is the portrait's with
  the driving face's copied at the points LivePortrait lists (1, 2, 6, 11-20 whole; 3, 4: y;
  5, 8: z; 9: y and z). With one driving photo the relative branch keeps the portrait's pose
  (R_d0 = R_d) and measures the expression against LivePortrait's stored neutral lips
  (`lip_array.pkl`, not part of FaceFusion's graphs), so the photo would never take the driving
  face's head pose: the absolute branch is the one that does what the tab promises.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEYPOINTS = 21
# The points and axes absolute motion copies from the driving face (live_portrait_pipeline.py,
# the non-relative branch): whole points, then (point, axes) pairs.
_DRIVEN_POINTS = [1, 2, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
_DRIVEN_AXES = [(3, [1]), (4, [1]), (5, [2]), (8, [2]), (9, [1, 2])]


def rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Rz(roll) Ry(yaw) Rx(pitch), degrees: the matrix that turns a column vector."""
    x, y, z = np.radians([pitch, yaw, roll])
    rot_x = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    rot_y = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rot_z = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


@dataclass(frozen=True)
class Motion:
    """What the motion extractor says about one face crop."""
    pitch: float
    yaw: float
    roll: float
    scale: float
    translation: np.ndarray    # (3,)
    expression: np.ndarray     # (21, 3)
    canonical: np.ndarray      # (21, 3), the identity's keypoints before pose and expression

    @classmethod
    def from_outputs(cls, outputs: list[np.ndarray]) -> "Motion":
        """From the graph's seven outputs, in FaceFusion's order: pitch, yaw, roll, scale,
        translation, expression, canonical points."""
        pitch, yaw, roll, scale, translation, expression, canonical = outputs
        return cls(float(np.ravel(pitch)[0]), float(np.ravel(yaw)[0]), float(np.ravel(roll)[0]),
                   float(np.ravel(scale)[0]), np.asarray(translation, np.float64).reshape(3),
                   np.asarray(expression, np.float64).reshape(KEYPOINTS, 3),
                   np.asarray(canonical, np.float64).reshape(KEYPOINTS, 3))

    @property
    def R(self) -> np.ndarray:
        """LivePortrait's R: the rotation that acts on row vectors (canonical @ R)."""
        return rotation(self.pitch, self.yaw, self.roll).T

    def keypoints(self) -> np.ndarray:
        """The face's own keypoints, x_s in LivePortrait (transform_keypoint)."""
        return keypoints(self.canonical, self.R, self.expression, self.scale, self.translation)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """For an .npz (a job's cached neutral): every number, exactly."""
        return {f"{prefix}_pose": np.array([self.pitch, self.yaw, self.roll, self.scale]),
                f"{prefix}_translation": self.translation, f"{prefix}_expression": self.expression,
                f"{prefix}_canonical": self.canonical}

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> "Motion":
        pitch, yaw, roll, scale = (float(v) for v in arrays[f"{prefix}_pose"])
        return cls(pitch, yaw, roll, scale, np.array(arrays[f"{prefix}_translation"]),
                   np.array(arrays[f"{prefix}_expression"]), np.array(arrays[f"{prefix}_canonical"]))


def keypoints(canonical: np.ndarray, R: np.ndarray, expression: np.ndarray, scale: float,
              translation: np.ndarray) -> np.ndarray:
    """scale * (canonical @ R + expression) + (tx, ty, 0): LivePortrait's Eqn. 2, its z shift dropped."""
    shift = np.array([translation[0], translation[1], 0.0])
    return scale * (canonical @ R + expression) + shift


def relative(source: Motion, driving: Motion, neutral: Motion) -> np.ndarray:
    """The portrait's keypoints moved as the driving face moved from `neutral` (the driving
    video's first frame) to `driving`. driving == neutral gives source.keypoints() exactly."""
    R_new = (driving.R @ neutral.R.T) @ source.R
    expression = source.expression + (driving.expression - neutral.expression)
    scale = source.scale * (driving.scale / neutral.scale)
    translation = source.translation + (driving.translation - neutral.translation)
    return keypoints(source.canonical, R_new, expression, scale, translation)


def absolute(source: Motion, driving: Motion) -> np.ndarray:
    """The portrait's keypoints with the driving face's head pose, position and expression."""
    expression = source.expression.copy()
    expression[_DRIVEN_POINTS] = driving.expression[_DRIVEN_POINTS]
    for point, axes in _DRIVEN_AXES:
        expression[point, axes] = driving.expression[point, axes]
    return keypoints(source.canonical, driving.R, expression, source.scale, driving.translation)
