"""The event writer that needs no TensorFlow: files TensorBoard reads back."""

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.util import tensor_util

from keras_gradwatch import _events, _summary, _writer


def _crc32c(data: bytes) -> int:
    """Bitwise CRC-32C (Castagnoli), straight from its definition."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_records_are_framed_as_tfrecord():
    datas = [b"", b"a", os.urandom(300), os.urandom(7)]
    framed = _writer.records(datas)
    at = 0
    for data in datas:
        header = framed[at : at + 8]
        assert int.from_bytes(header, "little") == len(data)
        assert int.from_bytes(framed[at + 8 : at + 12], "little") == _masked(header)
        assert framed[at + 12 : at + 12 + len(data)] == data
        crc = framed[at + 12 + len(data) : at + 16 + len(data)]
        assert int.from_bytes(crc, "little") == _masked(data)
        at += 16 + len(data)
    assert at == len(framed)
    assert _writer.records([]) == b""
    # The reference itself: CRC-32C of "123456789" is 0xE3069283.
    assert _crc32c(b"123456789") == 0xE3069283 != zlib.crc32(b"123456789")


def test_tensorboard_reads_back_what_is_written(tmp_path):
    records = _summary.Records(["norm/w", "norm/b"], ["grad/w"], 3, "On a batch.")
    rows = np.array([[[-1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [1.0, 2.0, 5.0]]])
    writer = _writer.EventWriter(str(tmp_path / "run"))
    writer.write(0, records.serialize(np.array([1.5, 0.25]), rows))
    writer.write(7, records.serialize(np.array([3.0, 1e-30]), 2 * rows))
    writer.write(8, _summary.text_protos({"act/w": "relu"}, "Once."))
    writer.close()

    (path,) = (tmp_path / "run").iterdir()
    assert _events.process(str(path)) == (os.uname().nodename, str(os.getpid()))
    events = list(event_file_loader.EventFileLoader(str(path)).Load())
    assert events[0].file_version == "brain.Event:2"
    got = {
        (e.step, v.tag): (v.metadata.plugin_data.plugin_name, v)
        for e in events[1:]
        for v in e.summary.value
    }
    assert len(events) == 1 + 3 + 3 + 1  # one value per event
    plugin, value = got[(7, "grad/w")]
    assert plugin == "histograms"
    np.testing.assert_array_equal(tensor_util.make_ndarray(value.tensor), 2 * rows[0])
    plugin, value = got[(7, "norm/b")]
    assert plugin == "scalars"
    assert tensor_util.make_ndarray(value.tensor) == np.float32(1e-30)
    assert value.metadata.summary_description.endswith("On a batch.")
    plugin, value = got[(8, "act/w")]
    assert plugin == "text"
    assert tensor_util.make_ndarray(value.tensor) == b"relu"
    assert all(e.wall_time > 0 for e in events)
    # The report's own reader takes it too, CRCs checked.
    read = _events.read_file(str(path), lambda tag: tag.startswith("norm/"))
    assert read.values["norm/w"] == {0: 1.5, 7: 3.0}
    assert not +read.problems  # no positive count


def test_two_writers_in_one_second_get_two_files(tmp_path):
    for _ in range(2):
        _writer.EventWriter(str(tmp_path)).close()
    assert len(list(tmp_path.iterdir())) == 2


def test_unwritable_directory_names_log_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"`log_dir` must be a writable directory"):
        _writer.open_writer(str(blocker), "run", writes=True)
    assert isinstance(
        _writer.open_writer(str(blocker), "run", False), _writer.NoopWriter
    )


def test_writing_imports_no_tensorflow():
    code = (
        "import sys, numpy as np, tempfile\n"
        "from keras_gradwatch import _summary, _writer\n"
        "r = _summary.Records(['s'], ['h'], 2, '')\n"
        "w = _writer.EventWriter(tempfile.mkdtemp())\n"
        "w.write(1, r.serialize(np.ones(1), np.ones((1, 2, 3))))\n"
        "w.close()\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
