"""Command-line pieces shared by ``train.py`` and ``eval.py``: the multi-host flags, flag parsing
in which every bad flag, config file or config argument is one ``PROG: error: ...`` line (exit
status 2), and that line for any other error."""

from __future__ import annotations

import difflib
import errno
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import NoReturn

from absl import flags

from codajax.parallel import initialize_distributed

_COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"


def define_multihost_flags() -> None:
  """Defines ``--multihost``, ``--coordinator_address``, ``--num_processes``,
  ``--process_id`` and ``--init_timeout`` (defaults from the ``JAX_*`` environment)."""
  flags.DEFINE_bool(
      "multihost",
      bool(os.environ.get(_COORDINATOR_ENV)),
      "Join a multi-host run via jax.distributed.initialize.",
  )
  flags.DEFINE_string(
      "coordinator_address",
      os.environ.get(_COORDINATOR_ENV),
      "host:port of process 0 (auto-detected on TPU pods and SLURM).",
  )
  flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
  flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
  flags.DEFINE_integer("init_timeout", 120, "Seconds to wait for every process to join.")


def _flag_or_env(flag_value: int | None, name: str) -> int | None:
  value = os.environ.get(name)
  return flag_value if flag_value is not None else (int(value) if value else None)


def join_multihost_run(values: flags.FlagValues) -> None:
  """Joins the multi-host run the flags describe; nothing without ``--multihost``.

  Call before any other JAX call (see :func:`codajax.parallel.initialize_distributed`).
  """
  if not values.multihost:
    return
  initialize_distributed(
      values.coordinator_address,
      _flag_or_env(values.num_processes, "JAX_NUM_PROCESSES"),
      _flag_or_env(values.process_id, "JAX_PROCESS_ID"),
      values.init_timeout,
  )


# ---------------------------------------------------------------------------- errors as one line

TRACEBACK_ENV = "CODAJAX_TRACEBACK"
HELP_ARGS = ("-h", "-?", "--help", "--helpshort", "--helpfull")
_VERBOSITY_ARG = re.compile(r"^--?(?:verbosity|v)=(-?\d+)$")
_CONFIG_ARG = re.compile(r"^--?config(?:=(.*))?$")
_PARSE_FAILURE = "Error whilst parsing config file"


def wants_traceback(argv: Sequence[str]) -> bool:
  """``CODAJAX_TRACEBACK=1`` in the environment, or ``--verbosity=N`` (N >= 1) in ``argv``."""
  if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
    return True
  argv = list(argv)
  for i, arg in enumerate(argv):
    if arg in ("--verbosity", "-verbosity", "-v", "--v") and i + 1 < len(argv):
      arg = f"{arg}={argv[i + 1]}"
    match = _VERBOSITY_ARG.match(arg)
    if match and int(match.group(1)) >= 1:
      return True
  return False


def error_chain(error: BaseException | None) -> Iterator[BaseException]:
  """``error``, then its causes (``__cause__``, else ``__context__``), each once."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def disk_full(error: BaseException) -> OSError | None:
  """The "no space left on device" error in ``error``'s chain, if any."""
  for link in error_chain(error):
    if isinstance(link, OSError) and (
        link.errno == errno.ENOSPC or "No space left on device" in str(link)
    ):
      return link
    if "No space left on device" in str(link):
      return OSError(errno.ENOSPC, str(link))
  return None


def tolerant_console() -> None:
  """Console output never fails for its encoding (e.g. ``PYTHONIOENCODING=ascii``): characters
  the stream cannot encode are written as backslash escapes."""
  for stream in (sys.stdout, sys.stderr):
    if hasattr(stream, "reconfigure"):
      stream.reconfigure(errors="backslashreplace")


EXIT_GRACE_S = 30.0


def exit_bounded(status: int, grace_s: float = EXIT_GRACE_S) -> None:
  """Exits with ``status`` once the other non-daemon threads end, waiting ``grace_s`` seconds at
  most: a background thread stuck on a failed save (its waits already done or failed) must not
  keep the process alive."""
  deadline = time.monotonic() + grace_s
  for thread in threading.enumerate():
    if thread is not threading.current_thread() and not thread.daemon:
      thread.join(max(0.0, deadline - time.monotonic()))
  if any(
      t.is_alive() and not t.daemon
      for t in threading.enumerate()
      if t is not threading.current_thread()
  ):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
  sys.exit(status)


def fail(prog: str, error: BaseException | str, argv: Sequence[str]) -> NoReturn:
  """Prints ``PROG: error: ...`` (and ``error``'s traceback if :func:`wants_traceback`) on
  stderr and exits with status 2. ``error``: an exception (its message is printed) or text."""
  if isinstance(error, BaseException) and wants_traceback(argv):
    traceback.print_exception(error)
  message = error if isinstance(error, str) else (str(error).strip() or type(error).__name__)
  print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
  exit_bounded(2)


# ------------------------------------------------------------------------- flags and the config


def config_path(argv: Sequence[str], default: str) -> str:
  """The ``--config`` value of ``argv`` (``FILE[:ARG]``; the last one wins), else ``default``."""
  argv, found = list(argv), default
  for i, arg in enumerate(argv):
    match = _CONFIG_ARG.match(arg)
    if match is None:
      continue
    if match.group(1) is not None:
      found = match.group(1)
    elif i + 1 < len(argv):
      found = argv[i + 1]
  return found


def _config_files(folder: str) -> list[str]:
  """The ``*.py`` files of ``folder`` that define ``get_config``."""
  if not os.path.isdir(folder):
    return []
  names = []
  for name in sorted(os.listdir(folder)):
    if name.endswith(".py"):
      with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
        if "def get_config(" in f.read():
          names.append(name)
  return names


def config_file_problem(path: str) -> str | None:
  """Why the config ``path`` (``FILE[:ARG]``) cannot be loaded, before loading it; else None."""
  file = path.split(":", 1)[0]
  if os.path.isfile(file):
    return None
  folder = os.path.dirname(file) or "."
  if not os.path.exists(file):
    where = "not found"
  else:
    where = "is not a file"
  found = _config_files(folder)
  listed = f" ({folder}/ holds {', '.join(found)})" if found else ""
  return f"config file {file} {where}{listed}."


def _load_config(path: str):
  """The ConfigDict of a config ``FILE[:ARG]`` (unlocked), or None if it does not load."""
  from ml_collections import ConfigDict
  from ml_collections.config_flags import config_flags

  try:
    config = config_flags.ConfigFileFlagParser("config", lock_config=False).parse(path)
  except Exception:  # noqa: BLE001  (the caller reports the original error)
    return None
  return config if isinstance(config, ConfigDict) else None


def _overrides(argv: Sequence[str]) -> list[str]:
  """The keys of the ``--config.KEY=VALUE`` overrides in ``argv``, e.g. ``evals.foo.n``."""
  keys = []
  for arg in argv[1:]:
    match = re.match(r"^--?(?:no)?config\.([^=]+)", arg)
    if match:
      keys.append(match.group(1))
  return keys


def unknown_key(config, key: str) -> str | None:
  """``"KEY (PARENT has a, b, c)"`` for the first part of ``key`` (``a.b.c``) missing from
  ``config``; None if every part is there."""
  node, parts = config, key.split(".")
  for depth, part in enumerate(parts):
    if not hasattr(node, "keys") or part not in node:
      parent = ".".join(parts[:depth]) or "the config"
      if not hasattr(node, "keys"):
        return f"config.{key} ({parent} is a value, not a group of keys)"
      keys = ", ".join(sorted(node.keys())) or "no keys"
      close = difflib.get_close_matches(part, list(node.keys()), n=1)
      guess = f"; did you mean {close[0]}?" if close else ""
      return f"config.{key} ({parent} has {keys}{guess})"
    node = node[part]
  return None


def flag_error(error: BaseException, argv: Sequence[str], default_config: str) -> str:
  """One line for an error of absl/ml_collections flag parsing: a config file that is missing,
  has no ``get_config`` or refuses its argument; an unknown ``--config.KEY``; else the error."""
  path = config_path(argv, default_config)
  problem = config_file_problem(path)
  if problem:
    return problem
  for link in error_chain(error):
    if isinstance(link, AttributeError) and "get_config" in str(link):
      return (
          f"config file {path.split(':', 1)[0]} defines no get_config(arg=None) function "
          "(a config file returns its ConfigDict from get_config; see configs/digits.py)."
      )
    if str(link).startswith(_PARSE_FAILURE) and link.__context__ is not None:
      original = link.__context__
      text = " ".join(str(original).split()) or type(original).__name__
      return text if path.split(":", 1)[0] in text else f"config file {path}: {text}"
  if isinstance(error, (AttributeError, KeyError)):
    config = _load_config(path)
    for key in _overrides(argv) if config is not None else ():
      unknown = unknown_key(config, key)
      if unknown is None:
        continue
      group = next((g for g in ("model.kwargs", "evals") if key.startswith(g + ".")), None)
      hint = (
          f"{group} takes no new keys on the command line; add them to the config file's "
          f"config.{group}"
          if group
          else "check the spelling"
      )
      return f"unknown config key {unknown}; {hint}."
  text = " ".join(str(error).split()) or type(error).__name__
  return text if isinstance(error, flags.Error) else f"{type(error).__name__}: {text}"


def parse_flags(
    prog: str, argv: Sequence[str], usage: str, default_config: str, flag_names: Sequence[str]
) -> list[str]:
  """absl's flag parsing for ``prog`` (``train.py``, ``eval.py``), every failure one line.

  ``--help`` prints ``usage`` and the flags and exits 0. A config file that is missing, lacks
  ``get_config`` or refuses its argument (``FILE.py:ARG``), an unknown ``--config.KEY``, a bad
  flag value and any positional argument (``flag_names`` are listed instead) exit 2.
  """
  if any(arg in HELP_ARGS for arg in argv[1:]):
    print(f"{usage}\n\nflags:\n{flags.FLAGS.main_module_help()}")
    sys.exit(0)
  problem = config_file_problem(config_path(argv, default_config))
  if problem:
    fail(prog, problem, argv)
  try:
    remaining = flags.FLAGS(list(argv))
  except Exception as error:  # noqa: BLE001  (absl and ml_collections raise many types)
    fail(prog, flag_error(error, argv, default_config), argv)
  extra = remaining[1:]
  if extra:
    hint = next(
        (f"; for a config file use --config {a}" for a in extra if a.split(":")[0].endswith(".py")),
        "",
    )
    fail(
        prog,
        f"unexpected argument{'s' if len(extra) > 1 else ''} {' '.join(map(repr, extra))}"
        f"{hint}; {prog} takes only flags: {', '.join(flag_names)} (see --help).",
        argv,
    )
  return remaining
