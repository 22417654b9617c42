"""A local Cloud Storage emulator (``gcp-storage-emulator``, in memory) for the gs:// tests.

:func:`running_emulator` starts it in a subprocess on a free loopback port, waits (bounded) for
it to answer, creates the bucket, points the standard variables at it and stops it at the end:

* ``STORAGE_EMULATOR_HOST``: gcsfs (etils.epath's gs:// backend) and google-cloud-storage;
  both then send no credentials.
* ``TENSORSTORE_GCS_HTTP_URL``: TensorStore's GCS driver (orbax's arrays).
* ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``: gcsfs's plain file system. By default gcsfs
  first asks the Storage Control API (gRPC ``GetStorageLayout``) for the bucket's type; the
  emulator does not serve that API, and each failed probe is retried and logged.

codajax has no code path of its own for the emulator: these are the libraries' variables.

Where gcp-storage-emulator (2026.7.19) falls short of Cloud Storage, and what this file adds
(run as ``python tests/gcs_emulator.py PORT BUCKET``, it serves the emulator with these):

* Generation preconditions are ignored: ``ifGenerationMatch`` / ``ifGenerationNotMatch`` on
  uploads, downloads and deletes. Cloud Storage answers 412 (304 for a read whose
  ``ifGenerationNotMatch`` matches). codajax's gs:// lease and TensorStore's OCDBT manifest
  updates rely on them.
* Downloads (``GET .../o/NAME?alt=media``) carry no ``x-goog-generation`` header.
  TensorStore's GCS driver takes the generation of what it read from that header, so after a
  revalidating read (``GET .../manifest.ocdbt?alt=media&ifGenerationNotMatch=G``, answered
  200 without the header instead of 304) its next conditional write of ``manifest.ocdbt``
  fails with "Malformed StorageGeneration" (seen when orbax saves a second checkpoint in a
  resumed process).

The wrappers below add exactly these: the precondition checks on the object's current
generation (0 when it does not exist) and the two ``x-goog-*generation`` download headers.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request

from two_processes import free_port  # tests/ is on sys.path

START_TIMEOUT_S = 30


@contextlib.contextmanager
def running_emulator(bucket: str):
  """Yields the emulator's URL with ``bucket`` created and the variables above set."""
  port = free_port()
  url = f"http://127.0.0.1:{port}"
  proc = subprocess.Popen(
      [sys.executable, os.path.abspath(__file__), str(port), bucket],
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
  )
  saved = {
      k: os.environ.get(k)
      for k in (
          "STORAGE_EMULATOR_HOST",
          "TENSORSTORE_GCS_HTTP_URL",
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT",
      )
  }
  try:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
      if proc.poll() is not None:
        raise RuntimeError(f"gcp-storage-emulator exited with status {proc.returncode}")
      try:
        urllib.request.urlopen(url + "/", timeout=1).read()
        break
      except OSError:
        if time.monotonic() > deadline:
          raise RuntimeError(
              f"gcp-storage-emulator did not answer on {url} within " f"{START_TIMEOUT_S} s"
          ) from None
        time.sleep(0.1)
    os.environ.update(
        STORAGE_EMULATOR_HOST=url,
        TENSORSTORE_GCS_HTTP_URL=url,
        GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT="false",
    )
    yield url
  finally:
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


# ------------------------------------------------------------------------------ the server


def _object_name(request):
  """The object a request addresses (path for GET/DELETE; ``name`` for uploads), or None."""
  params = request.params or {}
  if "object_id" in params:
    return params["object_id"]
  if "name" in request.query:
    return request.query["name"][0]
  if request.query.get("uploadType") == ["multipart"]:
    return request.data["meta"].get("name")
  return None


def _with_generations(handler):
  """``handler`` with Cloud Storage's generation preconditions and download headers."""
  from http import HTTPStatus

  from gcp_storage_emulator.exceptions import NotFound

  def current(storage, bucket, name):
    try:
      return int(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
      return 0

  def wrapped(request, response, storage, *args, **kwargs):
    name = _object_name(request)
    bucket = (request.params or {}).get("bucket_name")
    if name is not None and bucket is not None:
      generation = current(storage, bucket, name)
      match = request.query.get("ifGenerationMatch")
      not_match = request.query.get("ifGenerationNotMatch")
      reading = request.method == "GET"
      if match is not None and int(match[0]) != generation:
        response.status = HTTPStatus.PRECONDITION_FAILED
        return None
      if not_match is not None and int(not_match[0]) == generation and generation != 0:
        response.status = HTTPStatus.NOT_MODIFIED if reading else HTTPStatus.PRECONDITION_FAILED
        return None
    result = handler(request, response, storage, *args, **kwargs)
    if (
        request.method == "GET"
        and name is not None
        and bucket is not None
        and response.status.value in (200, 206)
        and (request.query.get("alt") == ["media"] or "/download/" in request.path)
    ):
      obj = storage.get_file_obj(bucket, name)
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj["metageneration"])
    return result

  return wrapped


def serve(port: int, bucket: str) -> None:
  """The in-memory emulator on 127.0.0.1:``port`` with ``bucket``, generations added."""
  from gcp_storage_emulator import server

  server.HANDLERS = tuple(
      (regex, {method: _with_generations(fn) for method, fn in table.items()})
      for regex, table in server.HANDLERS
  )
  server.create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket).run()


if __name__ == "__main__":
  serve(int(sys.argv[1]), sys.argv[2])
