"""Clear errors (naming the exact prepare command), the prepare CLI, and downloads only on request."""

import dataclasses
import functools
import http.server
import os
import threading
import urllib.request

import numpy as np
import pytest

from codajax.data import (
    DatasetNotPreparedError,
    ManualDataNotFoundError,
    UnknownDatasetError,
    catalog,
    dataset_info,
    eval_loader,
    prepare_dataset,
    train_loader,
)
from codajax.data import prepare as prepare_cli
from codajax.data.builders import cifar10


@pytest.fixture
def no_network(monkeypatch):
  """Fails the test on any attempt to open a URL."""

  def refuse(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")

  monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_unknown_name_lists_the_known_datasets(tmp_path):
  prepare_dataset("shapes", data_dir=str(tmp_path), num_train=10, num_test=10)
  with pytest.raises(UnknownDatasetError) as error:
    dataset_info("cifar11", data_dir=str(tmp_path))
  for name in catalog.KNOWN_NAMES:
    assert name in str(error.value)
  assert "(found there: shapes)" in str(error.value)
  with pytest.raises(UnknownDatasetError, match="digits"):
    train_loader(
        "no_such_dataset",
        global_batch_size=8,
        seed=0,
        data_dir=str(tmp_path),
        process_index=0,
        process_count=1,
    )


@pytest.mark.parametrize(
    "name, command",
    [
        (
            "cifar10",
            "python -m codajax.data.prepare cifar10 --manual_dir {}/downloads/manual/cifar10 --data_dir {}",
        ),
        (
            "imagenet100",
            "python -m codajax.data.prepare imagenet100 --manual_dir IMAGENET_ROOT_WITH_train_AND_val "
            "--data_dir {}",
        ),
        (
            "imagenet_folder/first10",
            "python -m codajax.data.prepare imagenet_folder --manual_dir "
            "IMAGENET_ROOT_WITH_train_AND_val --data_dir {} --classes 10",
        ),
        (
            "tiny_imagenet",
            "python -m codajax.data.prepare tiny_imagenet --manual_dir {}/downloads/manual/tiny_imagenet "
            "--data_dir {}",
        ),
        ("imagenet2012", "python -m codajax.data.prepare imagenet2012 --data_dir {} --download"),
    ],
)
def test_an_unprepared_dataset_names_the_exact_prepare_command(tmp_path, no_network, name, command):
  with pytest.raises(DatasetNotPreparedError) as error:
    eval_loader(name, global_batch_size=8, data_dir=str(tmp_path), process_index=0, process_count=1)
  assert command.format(*[tmp_path] * command.count("{}")) in str(error.value)
  assert not os.listdir(tmp_path) or name == "imagenet2012"  # nothing was prepared or fetched


def test_a_missing_archive_names_the_command_and_downloads_nothing(tmp_path, no_network):
  manual = tmp_path / "manual"
  manual.mkdir()
  with pytest.raises(ManualDataNotFoundError) as error:
    prepare_dataset("cifar10", data_dir=str(tmp_path / "data"), manual_dir=str(manual))
  assert f"cifar-10-python.tar.gz not found in manual directory {manual}" in str(error.value)
  assert (
      f"python -m codajax.data.prepare cifar10 --manual_dir {manual} --data_dir {tmp_path / 'data'}"
      in str(error.value)
  )
  with pytest.raises(ManualDataNotFoundError, match="train/<wnid>") as error:
    prepare_dataset("imagenet100", data_dir=str(tmp_path / "data"), manual_dir=str(manual))
  assert f"python -m codajax.data.prepare imagenet100 --manual_dir {manual} --data_dir" in str(
      error.value
  )
  with pytest.raises(ManualDataNotFoundError) as error:
    prepare_dataset(
        "imagenet_folder", data_dir=str(tmp_path / "data"), manual_dir=str(manual), classes=7
    )
  assert (
      f"python -m codajax.data.prepare imagenet_folder --manual_dir {manual} --data_dir {tmp_path / 'data'} "
      "--classes 7"
  ) in str(error.value)
  with pytest.raises(ManualDataNotFoundError, match="tiny-imagenet-200"):
    prepare_dataset("tiny_imagenet", data_dir=str(tmp_path / "data"))


def test_tfds_datasets_are_not_downloaded_without_permission(tmp_path, no_network):
  with pytest.raises(DatasetNotPreparedError, match="--download"):
    prepare_dataset("mnist", data_dir=str(tmp_path))


def test_conflicting_or_misplaced_flags_are_errors(tmp_path):
  with pytest.raises(ValueError, match="flags say"):
    prepare_dataset("shapes/train10_test10_seed0", data_dir=str(tmp_path), num_train=20)
  with pytest.raises(ValueError, match="not to cifar10"):
    prepare_dataset("cifar10", data_dir=str(tmp_path), classes=10)
  with pytest.raises(ValueError, match="imagenet_folder --classes 50"):
    prepare_dataset("imagenet100", data_dir=str(tmp_path), classes=50)
  with pytest.raises(UnknownDatasetError, match="no configs"):
    dataset_info("digits/big", data_dir=str(tmp_path))


def test_cli_prepares_and_reports_errors(tmp_path, capsys, no_network):
  assert (
      prepare_cli.main(
          ["shapes", "--num_train", "12", "--num_test", "4", "--data_dir", str(tmp_path)]
      )
      == 0
  )
  assert '"name": "shapes/train12_test4_seed0"' in capsys.readouterr().out
  assert prepare_cli.main(["cifar10", "--data_dir", str(tmp_path)]) == 2
  message = capsys.readouterr().err  # a real folder (where --download puts it), not a placeholder
  assert (
      f"put it in {tmp_path}/downloads/manual/cifar10, then run:\n  python -m codajax.data.prepare cifar10 "
      f"--manual_dir {tmp_path}/downloads/manual/cifar10 --data_dir {tmp_path}"
  ) in message
  assert prepare_cli.main(["cifar11", "--data_dir", str(tmp_path)]) == 2
  assert "Known datasets: digits, shapes, cifar10" in capsys.readouterr().err


def test_download_fetches_the_archive_only_when_asked(tmp_path, monkeypatch):
  served = tmp_path / "server"
  served.mkdir()
  images = np.zeros((10, 32, 32, 3), np.uint8)
  cifar10.write_archive(
      str(served / cifar10.ARCHIVE_NAME), (images, np.arange(10) % 10), (images[:3], [0, 1, 2])
  )
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
  handler.log_message = lambda *args: None
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  url = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
  monkeypatch.setitem(
      catalog._FAMILIES, "cifar10", dataclasses.replace(catalog._FAMILIES["cifar10"], url=url)
  )
  try:
    data_dir = str(tmp_path / "data")
    with pytest.raises(ManualDataNotFoundError):
      prepare_dataset("cifar10", data_dir=data_dir)
    spec = prepare_dataset("cifar10", data_dir=data_dir, download=True)
  finally:
    server.shutdown()
  assert spec.split_sizes == {"train": 10, "test": 3}
  assert (
      tmp_path / "data" / "downloads" / "manual" / "cifar10" / "cifar-10-python.tar.gz"
  ).is_file()


# ---- damaged inputs: one error naming the file and the command -----------------------------


def _write_bad_archive(path, kind):
  import gzip
  import io
  import tarfile

  if kind == "text":
    path.write_text("this is not an archive\n")
  elif kind == "gzip_of_non_tar":
    path.write_bytes(gzip.compress(b"hello world" * 100))
  elif kind == "tar_without_batches":
    with tarfile.open(path, "w:gz") as archive:
      info = tarfile.TarInfo("readme.txt")
      info.size = 3
      archive.addfile(info, io.BytesIO(b"abc"))
  else:  # truncated: a real-format archive cut in half
    images = np.zeros((10, 32, 32, 3), np.uint8)
    cifar10.write_archive(str(path), (images, np.arange(10) % 10), (images[:3], [0, 1, 2]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("kind", ["text", "gzip_of_non_tar", "tar_without_batches", "truncated"])
def test_prepare_cifar10_with_a_bad_archive_is_one_error_line(tmp_path, capsys, no_network, kind):
  manual = tmp_path / "manual"
  manual.mkdir()
  _write_bad_archive(manual / cifar10.ARCHIVE_NAME, kind)
  data_dir = tmp_path / "data"
  status = prepare_cli.main(["cifar10", "--manual_dir", str(manual), "--data_dir", str(data_dir)])
  err = capsys.readouterr().err
  assert status == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: cifar10: "), err
  assert str(manual / cifar10.ARCHIVE_NAME) in lines[0] and cifar10.ARCHIVE_URL in lines[0]
  assert not data_dir.exists()  # no empty dataset folder is left behind


def _prepared_digits(tmp_path):
  import shutil

  data_dir = tmp_path / "data"
  prepare_dataset("digits", data_dir=str(data_dir))
  folder = data_dir / "codajax_digits" / "1.0.0"
  assert (folder / "dataset_info.json").exists()
  return data_dir, folder, shutil


def test_a_corrupt_dataset_info_json_names_the_file(tmp_path):
  from codajax.data import DatasetCorruptError

  data_dir, folder, _ = _prepared_digits(tmp_path)
  (folder / "dataset_info.json").write_text("garbage{")
  with pytest.raises(DatasetCorruptError) as error:
    dataset_info("digits", data_dir=str(data_dir))
  message = str(error.value)
  assert str(folder / "dataset_info.json") in message and f"delete {folder}" in message


def test_a_corrupt_array_record_names_the_files_when_read(tmp_path):
  from codajax.data import DatasetCorruptError, load_examples

  data_dir, folder, _ = _prepared_digits(tmp_path)
  path = folder / "codajax_digits-train.array_record-00000-of-00001"
  data = bytearray(path.read_bytes())
  for i in range(100, len(data), 7):
    data[i] ^= 0x5A
  path.write_bytes(bytes(data))
  with pytest.raises(DatasetCorruptError) as error:
    load_examples("digits", "train", data_dir=str(data_dir))
  assert str(folder) in str(error.value) and path.name in str(error.value)
  assert load_examples("digits", "test", data_dir=str(data_dir))["image"].shape[0] == 360
