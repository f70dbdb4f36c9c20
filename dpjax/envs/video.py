"""Rollout videos: mp4 through imageio-ffmpeg, gif where ffmpeg is unavailable."""
import pathlib
import warnings

import imageio
import numpy as np

from dpjax import files


def _ffmpeg_available():
  try:
    import imageio_ffmpeg  # pylint: disable=import-outside-toplevel
    imageio_ffmpeg.get_ffmpeg_exe()
    return True
  except (ImportError, RuntimeError):
    return False


def write_video(path, frames, fps=10):
  """Writes frames to `path`.

  Args:
    path: output file; its suffix becomes ".gif" when ffmpeg is unavailable.
    frames: uint8 [T, H, W, 3]. H and W even for mp4 (odd sides are resized up by one).
    fps: frames per second (10 = the environment's control rate, i.e. real time).

  Returns:
    pathlib.Path of the file written (whole: it is written beside `path` and renamed into place).
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with warnings.catch_warnings():
    # JAX warns at every fork; these are subprocesses starting ffmpeg (to find it, then to encode): the child execs
    # at once and runs no Python or JAX code, so the deadlock the warning is about cannot happen.
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    if path.suffix.lower() == ".mp4" and _ffmpeg_available():
      # macro_block_size=2: yuv420p needs even sides; 96 and 256 pass unchanged.
      with files.replaced_when_written(path) as tmp, imageio.get_writer(
          tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264", macro_block_size=2,
          pixelformat="yuv420p") as writer:
        for frame in frames:
          writer.append_data(frame)
      return path
  path = path.with_suffix(".gif")
  with files.replaced_when_written(path) as tmp:
    imageio.mimsave(tmp, list(frames), format="GIF", duration=1000.0 / fps, loop=0)
  return path
