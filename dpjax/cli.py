"""What the command lines (`dpjax.train`, `dpjax.rollout`) share: an error a person can fix is one line naming the
field or file and the fix, the traceback only with --traceback.

    run(main, "dpjax.train")                 # absl's app.run with the flag parsing below
    with errors_as_one_line("dpjax.train", (ValueError, OSError)):
      ...

Flag parsing adds two things to absl's: `--config=RUN/config.json` loads a run's saved config (through
`dpjax/config_json.py`), and a bad config override (`--config.train.num_step=10`) or config file is one line naming
the closest valid fields, not ml_collections' traceback.

Both command lines keep JAX's persistent compilation cache (`use_compilation_cache`): a rerun, a resumed run or a
second evaluation loads its compiled programs instead of compiling them again.
"""
import contextlib
import difflib
import errno
import functools
import os
import pathlib
import re
import sys

from absl import app, flags, logging
import jax
import ml_collections

FLAGS = flags.FLAGS
flags.DEFINE_bool("traceback", False, "Show the Python traceback of an error (default: one line naming the problem "
                  "and the fix).")

flags.DEFINE_string("compilation_cache_dir", None, "Folder of JAX's persistent compilation cache, so that a rerun or "
                    "resumed run loads its compiled programs (default: $JAX_COMPILATION_CACHE_DIR, else "
                    "~/.cache/dpjax/xla; an empty value turns the cache off).")

JSON_LOADER = pathlib.Path(__file__).with_name("config_json.py")


def run(main, program: str) -> None:
  app.run(main, flags_parser=functools.partial(parse_flags, program=program))


def start_run_reader(argv, checkpoint: str | None) -> None:
  """The start of a command line that reads a training run (`dpjax.rollout`, `dpjax.export`): no stray arguments,
  --checkpoint given, and orbax's INFO line per restore silenced unless --verbosity asks for it."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not checkpoint:
    raise app.UsageError("--checkpoint=RUN_DIR is required (a directory written by python -m dpjax.train).")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def compilation_cache_dir(flag_value: str | None, environ) -> str | None:
  """The cache folder: the flag when given ('' = no cache), else $JAX_COMPILATION_CACHE_DIR, else
  $XDG_CACHE_HOME/dpjax/xla (XDG_CACHE_HOME defaults to ~/.cache)."""
  if flag_value is not None:
    return flag_value or None
  if environ.get("JAX_COMPILATION_CACHE_DIR"):
    return environ["JAX_COMPILATION_CACHE_DIR"]
  return os.path.join(environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dpjax", "xla")


def use_compilation_cache(flag_value: str | None) -> str | None:
  """Points JAX's persistent compilation cache at `compilation_cache_dir(flag_value)` (call it before the first
  compile); returns the folder, or None with the cache off. Programs that compile in under a second are not stored
  (JAX's default); a damaged entry is a warning and a fresh compile, never an error."""
  path = compilation_cache_dir(flag_value, os.environ)
  if path is not None:
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as e:
      print(f"compilation cache off: cannot create {path} ({e.strerror}); name a writable folder with "
            "--compilation_cache_dir=FOLDER (an empty value turns the cache off without this line)", file=sys.stderr)
      path = None
  if path is None:
    jax.config.update("jax_enable_compilation_cache", False)
  else:
    jax.config.update("jax_compilation_cache_dir", path)
  return path


@contextlib.contextmanager
def errors_as_one_line(program: str, errors: tuple):
  """Ends the program with `program: message` (exit status 1) on an exception of one of `errors` or a full disk;
  re-raises it under --traceback, and re-raises anything else (a bug wants its traceback)."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    if _wants_traceback() or not (isinstance(e, errors) or is_disk_full(e)):
      raise
    raise SystemExit(f"{program}: {describe(e)}") from None


def is_disk_full(error: BaseException) -> bool:
  # Orbax and tensorstore report a full disk from their writer threads as other types, with the OS text.
  return getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)


def describe(error: BaseException) -> str:
  if is_disk_full(error):
    return (f"{_first_line(error)}; free some space (or choose another --workdir/--out) and run the same command "
            "again: training resumes from its last complete checkpoint.")
  if isinstance(error, FileNotFoundError) and error.filename:
    return f"no such file or directory: {error.filename}"
  return str(error)


def parse_flags(argv: list[str], program: str) -> list[str]:
  """absl's flag parsing with a run's config.json accepted as --config and a bad --config as one line."""
  given, argv = argv, config_json_argv(argv)
  try:
    remaining = FLAGS(argv)
    if "config" in FLAGS and FLAGS["config"].value is not None:
      FLAGS["config"].value.keys()   # config_flags keeps a config file's load error until the config's first use
    return remaining
  except Exception as e:  # pylint: disable=broad-except  (ml_collections raises AttributeError, KeyError, ...)
    if any(re.fullmatch(r"--?traceback(=(true|1))?", a, re.IGNORECASE) for a in argv):
      raise
    message = unknown_config_field(argv)
    config_arg = _config_arg(given)
    if message is None and config_arg and (isinstance(e, OSError) or "config file" in str(e)):
      message = f"--config={config_arg}: {_last_line(e)}"
    hint = "\nPass --helpshort or --helpfull to see help on flags." if isinstance(e, flags.Error) else ""
    sys.exit(f"{program}: {message or _first_line(e)}{'' if message else hint}")


def config_json_argv(argv: list[str]) -> list[str]:
  """`--config=PATH.json` (or `--config PATH.json`) -> `--config=dpjax/config_json.py:PATH.json`: config_flags
  runs a config file as Python, and takes what follows the first ':' as the argument of its get_config."""
  out = list(argv)
  for i, arg in enumerate(out):
    match = re.fullmatch(r"(--?config=)(.+\.json)", arg)
    if match:
      out[i] = f"{match[1]}{JSON_LOADER}:{match[2]}"
    elif arg in ("--config", "-config") and i + 1 < len(out) and out[i + 1].endswith(".json"):
      out[i + 1] = f"{JSON_LOADER}:{out[i + 1]}"
  return out


def unknown_config_field(argv: list[str]) -> str | None:
  """For the first `--config.a.b=...` override naming no field of the config file: a line naming it and the
  closest valid names. None when every override names a field, or the config file itself does not load."""
  config_arg = _config_arg(argv)
  if config_arg is None or "config" not in FLAGS:
    return None
  try:
    config = FLAGS["config"].parser.parse(config_arg)
    config.keys()
  except Exception:  # pylint: disable=broad-except  (the file's own error is reported instead)
    return None
  for arg in argv:
    match = re.match(r"--?(?:no)?config\.([^=]+)", arg)
    if match:
      message = _missing_field(config, match[1])
      if message:
        return message
  return None


def _config_arg(argv: list[str]) -> str | None:
  """The value of --config in `argv` (None without one, or in a program without the flag)."""
  if "config" not in FLAGS:
    return None
  for i, arg in enumerate(argv):
    if re.match(r"--?config=", arg):
      return arg.split("=", 1)[1]
    if arg in ("--config", "-config") and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _missing_field(config, dotted: str) -> str | None:
  node, path = config, []
  for name in dotted.split("."):
    name = re.sub(r"\[.*", "", name)   # an indexed field, e.g. down_dims[0]
    if not isinstance(node, ml_collections.ConfigDict):
      return None                      # inside a leaf value (a tuple): config_flags judges that
    if name not in node:
      prefix = "".join(f"{p}." for p in path)
      close = difflib.get_close_matches(name, list(node.keys()), n=3, cutoff=0.7)
      if close:
        return (f"--config.{dotted} is not a config field; did you mean "
                f"{' or '.join(f'--config.{prefix}{c}' for c in close)}?")
      return (f"--config.{dotted} is not a config field; config{'.' if path else ''}{'.'.join(path)} has "
              f"{', '.join(sorted(node.keys()))}.")
    node = node[name]
    path.append(name)
  return None


def _lines(error: BaseException) -> list[str]:
  return [line.strip() for line in str(error).strip().splitlines() if line.strip()] or [type(error).__name__]


def _first_line(error: BaseException) -> str:
  return _lines(error)[0]


def _last_line(error: BaseException) -> str:
  """The line naming the problem when config_flags wraps a config file's error in a traceback or a list of the
  paths it tried: the last, without its exception type."""
  line = _lines(error)[-1]
  os_error = re.search(r"\[Errno \d+\] .*", line)
  return os_error[0] if os_error else re.sub(r"^\w+(Error|Exception): ", "", line)


def _wants_traceback() -> bool:
  return FLAGS.is_parsed() and FLAGS.traceback
