"""One path type for every file codajax reads or writes: local paths and ``gs://`` alike.

Paths are :class:`etils.epath.Path` (what orbax and TFDS use): a local path, or a URI such
as ``gs://bucket/run``. Without TensorFlow, epath serves ``gs://`` through fsspec's
``gcsfs`` (a dependency of codajax), which finds credentials by Google's standard chain
(``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default login``, the VM's
metadata server) and honours ``STORAGE_EMULATOR_HOST``. Orbax writes the checkpoint arrays
through TensorStore, which reads the same credentials.

Atomic writes (:func:`write_atomic`): a reader sees the old content or the new one, never a
part. Locally: written to a temporary name in the same directory, then renamed over the
target (POSIX rename is atomic). On an object store: one upload; Cloud Storage makes an
object visible only once its upload is complete, so no rename (a rename there is a copy
and a delete, not atomic, and slower).

The work-directory lock is :func:`codajax.storage.workdir_lock`: ``flock`` locally, a lease
object with generation-match preconditions on ``gs://`` (see :class:`ObjectLease`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Iterator

import fsspec.config
from etils import epath

# gcsfs caches directory listings per process; another process's writes (a peer host's
# checkpoint, a resumed run's) would then stay invisible. Every listing asks the store.
fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)

PathLike = str | os.PathLike[str]
# Seconds after which a lease object that was not renewed counts as abandoned.
LEASE_TTL_ENV = "CODAJAX_LOCK_TTL_S"
DEFAULT_LEASE_TTL_S = 60.0


def is_remote(path: PathLike) -> bool:
  """Whether ``path`` is a URI (``gs://...``) rather than a local path."""
  return "://" in os.fspath(path)


def path(p: PathLike) -> epath.Path:
  """``p`` as an ``epath.Path``; local paths made absolute (``~`` expanded), URIs kept."""
  text = os.fspath(p)
  if is_remote(text):
    return epath.Path(text)
  return epath.Path(os.path.abspath(os.path.expanduser(text)))


def join(base: PathLike, *parts: str) -> str:
  """``base/parts...`` as a string (local or URI)."""
  return os.fspath(path(base).joinpath(*parts))


def exists(p: PathLike) -> bool:
  return path(p).exists()


def isdir(p: PathLike) -> bool:
  return path(p).is_dir()


def makedirs(p: PathLike) -> None:
  """Creates ``p`` and its parents (a no-op on object stores' implicit folders if present)."""
  path(p).mkdir(parents=True, exist_ok=True)


def listdir(p: PathLike) -> list[str]:
  """Names of the entries of directory ``p``, sorted; [] if ``p`` is not a directory."""
  where = path(p)
  if not where.is_dir():
    return []
  return sorted(child.name for child in where.iterdir())


def read_text(p: PathLike) -> str:
  return path(p).read_text()


def read_bytes(p: PathLike) -> bytes:
  return path(p).read_bytes()


def read_json(p: PathLike) -> Any:
  return json.loads(read_text(p))


def write_atomic(p: PathLike, content: str | bytes) -> None:
  """Writes ``content`` to ``p`` so that readers see the old file or the whole new one.

  Local: a temporary file beside ``p``, then an atomic rename over it. Object stores: one
  upload (an object becomes visible only once complete). The parent directory is created.
  """
  target = path(p)
  data = content.encode() if isinstance(content, str) else content
  if is_remote(target):
    target.write_bytes(data)
    return
  target.parent.mkdir(parents=True, exist_ok=True)
  temporary = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
  try:
    temporary.write_bytes(data)
    os.replace(temporary, target)  # atomic on POSIX (epath's replace adds no guarantee)
  finally:
    if temporary.exists():
      temporary.unlink()


def write_json(p: PathLike, value: Any) -> None:
  """``value`` as indented JSON at ``p``, atomically (see :func:`write_atomic`)."""
  write_atomic(p, json.dumps(value, indent=2))


def files_under(p: PathLike) -> dict[str, int]:
  """``{relative path: size in bytes}`` of every file below the directory ``p`` (one listing
  request on an object store)."""
  where = os.fspath(path(p))
  if is_remote(where):
    import fsspec.core

    fs, root = fsspec.core.url_to_fs(where)
    found = fs.find(root, detail=True)
    prefix = root.rstrip("/") + "/"
    return {
        name[len(prefix) :]: int(info["size"])
        for name, info in found.items()
        if info.get("type") != "directory" and name.startswith(prefix)
    }
  sizes = {}
  for folder, _, names in os.walk(where):
    for name in names:
      file = os.path.join(folder, name)
      sizes[os.path.relpath(file, where)] = os.path.getsize(file)
  return sizes


def _ordered(names, last: str | None) -> list[str]:
  """``names`` sorted, those whose base name is ``last`` at the end."""
  return sorted(names, key=lambda name: (name.rsplit("/", 1)[-1] == last, name))


def copy_tree(source: PathLike, target: PathLike, *, last: str | None = None) -> None:
  """Copies the files under ``source`` to ``target`` (either may be remote).

  ``last``: a file name copied after every other file (e.g. the file whose presence marks
  the tree as complete), so a reader that waits for it sees the whole tree.
  """
  source, target = path(source), path(target)
  for name in _ordered(files_under(source), last):
    destination = target / name
    if not is_remote(destination):
      destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes((source / name).read_bytes())


def mirror(source: PathLike, target: PathLike, *, last: str | None = None) -> int:
  """Makes the local directory ``target`` hold the files of ``source`` (e.g. a gs:// folder).

  Files already there with the same size are kept; the others are downloaded to a temporary
  name and renamed into place (so concurrent mirrors of one source do not clash). ``last``:
  a file name fetched after every other file. Returns how many files were fetched.
  """
  source, target = path(source), path(target)
  wanted, present = files_under(source), files_under(target) if target.exists() else {}
  fetched = 0
  for name in _ordered(wanted, last):
    if present.get(name) != wanted[name]:
      write_atomic(target / name, (source / name).read_bytes())
      fetched += 1
  return fetched


def move_tree(source: PathLike, target: PathLike) -> None:
  """Moves the directory ``source`` to ``target`` (parent created).

  Local: one rename (atomic). Object stores have no rename: the files are copied, then the
  source is deleted (a move cut short leaves the source whole, so it can be done again).
  """
  source, target = path(source), path(target)
  if is_remote(source) or is_remote(target):
    copy_tree(source, target)
    source.rmtree()
    return
  target.parent.mkdir(parents=True, exist_ok=True)
  os.rename(source, target)


# ------------------------------------------------------------------------------ locking


class LockHeld(RuntimeError):
  """The work directory is locked by another running process."""


def lease_ttl_s() -> float:
  """Seconds after which an unrenewed lease is abandoned (``$CODAJAX_LOCK_TTL_S``, default 60)."""
  value = os.environ.get(LEASE_TTL_ENV)
  try:
    ttl = float(value) if value else DEFAULT_LEASE_TTL_S
  except ValueError:
    raise ValueError(f"{LEASE_TTL_ENV}={value!r} is not a number of seconds.") from None
  if not ttl > 0:
    raise ValueError(f"{LEASE_TTL_ENV}={value!r} must be > 0.")
  return ttl


def _owner() -> str:
  return f"{os.getpid()}@{socket.gethostname()}"


@contextlib.contextmanager
def _file_lock(lock_path: epath.Path) -> Iterator[None]:
  """``flock`` on a local file: released by the kernel when the process ends (even SIGKILL)."""
  import fcntl

  handle = open(lock_path, "a+")  # noqa: SIM115  (a local lock file; see module doc)
  try:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      handle.seek(0)
      raise LockHeld(f"process {handle.read().strip() or 'unknown'}; lock {lock_path}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{_owner()}\n")
    handle.flush()
    yield
  finally:
    handle.close()


@contextlib.contextmanager
def directory_lock(directory: PathLike) -> Iterator[None]:
  """``flock`` on a local directory's own file descriptor for the block: unlike a lock file,
  it cannot be deleted while held (the directory cannot be removed while it has entries, and
  a new directory at its path is another inode). :class:`LockHeld` if another process holds
  it. A file system without ``flock`` on directories (some network mounts) holds no lock here
  (the lock files still apply)."""
  import errno
  import fcntl

  descriptor = os.open(os.fspath(path(directory)), os.O_RDONLY)
  try:
    try:
      fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      if error.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
        logging.warning("Cannot flock the directory %s (%s).", directory, error)
        yield
        return
      raise LockHeld(f"the directory {os.fspath(path(directory))} is locked") from None
    yield
  finally:
    os.close(descriptor)


class ObjectLease:
  """An exclusive lease on a Cloud Storage object, for stores without ``O_EXCL``/``flock``.

  * acquire: the object is created with ``ifGenerationMatch=0`` (the create fails if it
    exists: of two racing processes exactly one wins). An existing lease not renewed for
    ``ttl_s`` (its owner died without releasing it, e.g. SIGKILL or a lost VM) is taken
    over with ``ifGenerationMatch=<its generation>`` (again one winner); one renewed within
    ``ttl_s / 2`` belongs to a live process: :class:`LockHeld`. In between, it waits.
  * renew: a thread rewrites the object every ``ttl_s / 4`` with ``ifGenerationMatch=<our
    generation>``; a failed precondition means another process took the lease over
    (logged as an error).
  * release: delete with ``ifGenerationMatch=<our generation>``.

  Ages are measured on the server's clock (the object's ``updated`` time against a fresh
  probe object's), so host clock skew does not matter.
  """

  def __init__(self, uri: str, ttl_s: float):
    from google.cloud import storage

    bucket, _, name = uri.removeprefix("gs://").partition("/")
    self.uri, self.ttl_s = uri, ttl_s
    self._client = storage.Client()
    self._bucket = self._client.bucket(bucket)
    self._name = name
    self._generation: int | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self.token = uuid.uuid4().hex

  def _record(self) -> str:
    return json.dumps({"owner": _owner(), "token": self.token, "time": time.time()})

  def _server_now(self) -> datetime.datetime:
    probe = self._bucket.blob(f"{self._name}.clock.{self.token}")
    probe.upload_from_string(b"")
    now = probe.updated
    probe.delete()
    return now

  def acquire(self) -> None:
    from google.api_core import exceptions

    while True:
      blob = self._bucket.blob(self._name)
      try:
        blob.reload()
      except exceptions.NotFound:
        blob = None
      try:
        if blob is None:
          target = self._bucket.blob(self._name)
          target.upload_from_string(self._record(), if_generation_match=0)
        else:
          age = (self._server_now() - blob.updated).total_seconds()
          if age < self.ttl_s / 2:
            raise LockHeld(f"process {_holder(blob)}; lease {self.uri} renewed {age:.0f} s ago")
          if age < self.ttl_s:
            logging.warning(
                "Lease %s was last renewed %.0f s ago; its owner looks dead. Waiting "
                "%.0f s before taking it over.",
                self.uri,
                age,
                self.ttl_s - age,
            )
            time.sleep(self.ttl_s - age)
            continue
          holder = _holder(blob)
          target = self._bucket.blob(self._name)
          target.upload_from_string(self._record(), if_generation_match=blob.generation)
          print(
              f"codajax: took over the abandoned lease {self.uri} (held by {holder}, "
              f"not renewed for {age:.0f} s).",
              flush=True,
          )
      except exceptions.PreconditionFailed:
        continue  # another process created or took it in between: look again
      self._generation = target.generation
      break
    self._thread = threading.Thread(
        target=self._renew_loop, daemon=True, name="codajax-lease-renewal"
    )
    self._thread.start()

  def _renew_loop(self) -> None:
    from google.api_core import exceptions

    while not self._stop.wait(self.ttl_s / 4):
      blob = self._bucket.blob(self._name)
      try:
        blob.upload_from_string(self._record(), if_generation_match=self._generation)
        self._generation = blob.generation
      except exceptions.PreconditionFailed:
        logging.error("Lost the lease %s: another process took it over. Stop this run.", self.uri)
        return
      except Exception as error:  # noqa: BLE001  (transient: try again at the next tick)
        logging.warning("Renewing the lease %s failed (%s); retrying.", self.uri, error)

  def release(self) -> None:
    from google.api_core import exceptions

    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._generation is not None:
      try:
        self._bucket.blob(self._name).delete(if_generation_match=self._generation)
      except (exceptions.NotFound, exceptions.PreconditionFailed):
        pass
      self._generation = None


def _holder(blob) -> str:
  try:
    return json.loads(blob.download_as_text()).get("owner", "unknown")
  except Exception:  # noqa: BLE001
    return "unknown"


@contextlib.contextmanager
def workdir_lock(workdir: PathLike, name: str) -> Iterator[None]:
  """Holds the exclusive lock ``workdir/name`` for the block; :class:`LockHeld` if taken.

  Local paths (and shared mounts): ``flock``. ``gs://``: an :class:`ObjectLease`.
  """
  where = path(workdir)
  makedirs(where)
  if is_remote(where):
    if not os.fspath(where).startswith("gs://"):
      raise ValueError(
          f"Work directories on {os.fspath(where).split('://')[0]}:// are not "
          "supported (local paths and gs:// are)."
      )
    from google.api_core import exceptions

    lease = ObjectLease(os.fspath(where / name), lease_ttl_s())
    try:
      lease.acquire()
    except exceptions.GoogleAPICallError as error:  # e.g. 403: no write permission
      raise OSError(f"{type(error).__name__}: {error}") from error
    try:
      yield
    finally:
      lease.release()
  else:
    with _file_lock(where / name):
      yield
