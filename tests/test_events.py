"""The event reader's pieces against TensorBoard's own pure-Python ones."""

from __future__ import annotations

import numpy as np
import pytest
from tensorboard.compat.proto import summary_pb2, tensor_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.util import tensor_util

from eventfiles import event, gradwatch_events, name, write
from keras_gradwatch import _events


def test_crc_matches_tensorboards_for_many_ranges_at_once():
    rng = np.random.default_rng(0)
    pieces = [rng.bytes(n) for n in (0, 1, 7, 8, 9, 200, 3000, 8, 0, 65)]
    buffer = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    starts = np.cumsum([0] + [len(p) for p in pieces[:-1]])
    got = _events.masked_crc32c(buffer, starts, [len(p) for p in pieces])
    assert got.tolist() == [masked_crc32c(p) for p in pieces]


@pytest.mark.parametrize("count", [1, 3, 40, 600])
def test_chunked_and_serial_crcs_agree_with_tensorboards(count):
    """Both ways `masked_crc32c` computes (chunks folded with the zero-byte
    map, or one byte per step), on ranges of many lengths, one reaching
    past a chunk boundary by a byte."""
    rng = np.random.default_rng(count)
    sizes = rng.integers(4, 2000, count).tolist()
    sizes[0] = 37 * 37 + 1  # one byte into a chunk of 37
    pieces = [rng.bytes(n) for n in sizes]
    buffer = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    starts = np.cumsum([0] + sizes[:-1])
    want = [masked_crc32c(p) for p in pieces]
    lengths = np.array(sizes)
    for way in (_events._chunked_crc32c, _events._serial_crc32c):
        crc = way(buffer, starts, lengths)
        masked = ((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)
        assert masked.tolist() == want, way.__name__


SCALARS = [
    np.float32(0.25),
    np.float64(-1e-300),
    np.float16(1.5),
    np.int32(-7),
    np.int64(2**40),
    np.uint8(200),
    np.int16(-300),
    np.int8(-5),
    np.uint16(60000),
    np.uint32(2**31 + 5),
    np.uint64(2**63 + 11),
    np.float32(np.nan),
    np.float32(-np.inf),
]
# TensorBoard's make_ndarray reads uint32 and uint64 only from tensor_content.
CASES = [(v, packed) for v in SCALARS for packed in (False, True)]
CASES = [(v, p) for v, p in CASES if p or v.dtype.kind != "u" or v.itemsize < 4]


@pytest.mark.parametrize(
    ("value", "packed"),
    CASES,
    ids=[f"{type(v).__name__}({v})-{'content' if p else 'field'}" for v, p in CASES],
)
def test_scalars_read_as_tensorboard_reads_them(value, packed):
    proto = tensor_util.make_tensor_proto(value)
    if packed:  # what TensorFlow's C++ writer does
        content = np.asarray(value).tobytes()
        for field in ("half_val", "float_val", "double_val", "int_val", "int64_val"):
            proto.ClearField(field)
        proto.ClearField("uint32_val")
        proto.ClearField("uint64_val")
        proto.tensor_content = content
    expected = float(tensor_util.make_ndarray(proto))
    got = _events._scalar(summary_pb2.Summary.Value(tag="t", tensor=proto))
    np.testing.assert_equal(got, expected)


def test_sessions_rule_on_files(tmp_path):
    run = tmp_path / "run"
    a = write(run / name(1e9, "a"), gradwatch_events(range(5), wall_time=1e9))
    b = write(run / name(2e9, "b"), gradwatch_events(range(5, 7), wall_time=2e9))
    c = write(run / name(3e9, "c"), gradwatch_events(range(6, 8), wall_time=3e9))
    extra = write(run / name(4e9, "d"), [event("other/tag", 0, 1.0, 4e9)])
    files = sorted(str(p) for p in (a, b, c, extra))
    joined = _events.read_run("run", files, lambda tag: tag.startswith("grad_"))
    # c (newest with data) wins over b, which shares step 6; a is disjoint.
    steps = sorted(joined.values["grad_norm/m/dense_0/kernel"])
    assert steps == [0, 1, 2, 3, 4, 6, 7]
    (note,) = joined.notes
    assert f"using {c.name} (steps 6-7)" in note
    assert f"leaving out {b.name} (steps 5-6)" in note
    assert a.name not in note


def _text_tensor(strings, shape=()):
    proto = tensor_pb2.TensorProto(dtype=7)  # DT_STRING
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    proto.string_val.extend(strings)
    return proto


def test_short_texts_are_decoded_and_others_noted(tmp_path):
    cases = {
        "activation/a": _text_tensor([b"relu"]),
        "activation/b": _text_tensor(["élu".encode()], shape=(1,)),
        "activation/long": _text_tensor([b"x" * (_events.MAX_TEXT + 1)]),
        "activation/bytes": _text_tensor([b"\xff\xfe"]),
        "activation/two": _text_tensor([b"relu", b"tanh"], shape=(2,)),
        "activation/none": _text_tensor([]),
        "other/text": _text_tensor([b"left alone"]),
    }
    path = write(
        tmp_path / name(),
        [event(tag, 3, proto, 1.0e9) for tag, proto in cases.items()],
    )
    got = _events.read_file(str(path), lambda tag: tag.startswith("activation/"))
    assert got.texts == {"activation/a": {3: "relu"}, "activation/b": {3: "élu"}}
    assert got.values == {}
    (problem,) = [p for p, n in got.problems.items() if n]
    assert "text" in problem
    assert got.problems[problem] == 4
    # Only activation tags are texts: any other string is not a scalar.
    run = _events.read_run("r", [str(path)], lambda tag: True)
    assert run.texts == {"activation/a": "relu", "activation/b": "élu"}
    assert "other/text" not in run.values
