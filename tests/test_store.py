"""The file layer: valid safetensors out, damaged safetensors refused, journal recovery, locking."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embtool import store as st
from embtool import vfs, wal
from embtool.errors import FormatError
from embtool.table import Config, Table, create

from helpers import assert_single_error_line, make_table, run


def raw_file(path: Path, header: dict | bytes, data: bytes = b"", length: int | None = None) -> Path:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def test_written_table_is_read_by_safetensors_and_torch(tmp_path, torch):
    from safetensors.torch import load_file

    w = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    p = make_table(tmp_path / "t.safetensors", w, padding_idx=2)
    assert np.array_equal(load_file(p)["weight"].numpy(), w)


def test_written_table_is_read_by_safetensors_numpy(tmp_path):
    from safetensors import safe_open

    w = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float32)
    p = make_table(tmp_path / "t.safetensors", w)
    with safe_open(p, "numpy") as f:
        assert np.array_equal(f.get_tensor("weight"), w)
        assert f.metadata()["embtool.format_version"] == "1"
    # data starts page-aligned; the header has spare room for in-place metadata updates
    h = st.read_header(p)
    assert h.data_start % st.HEADER_ALIGN == 0


@pytest.mark.parametrize("rows", [1, 7, 1000])
def test_the_largest_tensor_starts_on_a_page_boundary(tmp_path, rows):
    """With a vocabulary the I64 tensors come first: the header is padded so that the weight
    (the largest tensor) starts on a page boundary, the I64 tensors stay 8-byte aligned, and the
    header keeps its spare room."""
    from embtool.vocab import encode_vocab

    w = np.ones((rows, 5), np.float32)
    p = tmp_path / "t.safetensors"
    create(p, {"weight": w, **encode_vocab([f"w{i}" for i in range(rows)])}, Config(), force=True)
    h = st.read_header(p)
    assert (h.data_start + h.tensors["weight"].begin) % st.HEADER_ALIGN == 0
    assert h.data_start % 8 == 0 and h.tensors["vocab.offsets"].begin == 0
    raw = p.read_bytes()[8:h.data_start]
    assert len(raw) - len(raw.rstrip(b" ")) >= st.HEADER_SLACK
    with Table.open(p) as t:
        assert np.array_equal(t.weight(), w) and t.vocab.find("w0") == 0


def test_foreign_file_tensor_selection(tmp_path):
    from safetensors.numpy import save_file

    p = tmp_path / "model.safetensors"
    save_file({"a.bias": np.zeros(4, np.float32), "emb": np.ones((3, 4), np.float16),
               "proj": np.ones((4, 2), np.float32)}, str(p), metadata={"origin": "hub"})
    with pytest.raises(FormatError, match="2 2-D tensors; choose one with --tensor"):
        Table.open(p)
    with Table.open(p, tensor="emb") as t:
        assert (t.dtype, t.shape) == ("F16", (3, 4)) and not t.is_embtool
    with pytest.raises(FormatError, match="tensor 'a.bias' is 1-D"):
        Table.open(p, tensor="a.bias")
    with pytest.raises(FormatError, match="no tensor 'nope'"):
        Table.open(p, tensor="nope")


def test_bf16_is_widened_exactly(tmp_path, torch):
    from safetensors.torch import save_file

    w = torch.randn(6, 9).to(torch.bfloat16)
    p = tmp_path / "bf.safetensors"
    save_file({"weight": w}, str(p))
    with Table.open(p) as t:
        assert t.dtype == "BF16"
        assert np.array_equal(t.weight(), w.float().numpy())
    r = run("lookup", p, "0", "5", "-f", "npy")
    import io

    assert np.array_equal(np.load(io.BytesIO(r.stdout_bytes)), w.float().numpy()[[0, 5]])


DAMAGED = {
    "truncated": (lambda p: p.write_bytes(b"\x10\x00\x00"), "truncated safetensors file"),
    "header beyond file": (lambda p: raw_file(p, {"weight": {}}, length=10_000), "beyond the end of the file"),
    "bad json": (lambda p: raw_file(p, b'{"weight": [1,'), "invalid JSON"),
    "not an object": (lambda p: raw_file(p, b"[1, 2]"), "not a JSON object"),
    "offsets out of bounds": (
        lambda p: raw_file(p, {"weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 8),
        "tensor 'weight': data_offsets [0, 16] run past the end"),
    "dtype/shape vs length": (
        lambda p: raw_file(p, {"weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}}, b"\0" * 16),
        "need 24 bytes but data_offsets [0, 16] hold 16"),
    "overlap": (
        lambda p: raw_file(p, {"weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                               "x": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, b"\0" * 16),
        "overlap"),
    "unknown dtype": (
        lambda p: raw_file(p, {"weight": {"dtype": "Q4", "shape": [1, 1], "data_offsets": [0, 1]}}, b"\0"),
        "tensor 'weight' has dtype Q4"),
    "1-D tensor": (
        lambda p: raw_file(p, {"weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16),
        "tensor 'weight' is 1-D"),
    "3-D tensor": (
        lambda p: raw_file(p, {"weight": {"dtype": "F32", "shape": [1, 2, 2], "data_offsets": [0, 16]}}, b"\0" * 16),
        "tensor 'weight' is 3-D"),
    "bad metadata": (
        lambda p: raw_file(p, {"__metadata__": {"embtool.format_version": "1", "embtool.frozen": "maybe"},
                               "weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 16),
        "embtool.frozen='maybe' is not valid"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
@pytest.mark.parametrize("command", [["lookup", "{p}", "0"], ["freeze", "{p}"], ["renorm", "{p}", "--max-norm", "1"]])
def test_damaged_files_give_one_error_line_and_stay_unchanged(tmp_path, case, command):
    make, message = DAMAGED[case]
    p = tmp_path / "bad.safetensors"
    make(p)
    before = p.read_bytes()
    r = run(*[a.format(p=p) for a in command])
    assert_single_error_line(r, str(p), message)
    assert p.read_bytes() == before


@pytest.mark.parametrize("command", [["freeze", "{p}"], ["renorm", "{p}", "--max-norm", "1"]])
def test_integer_tables_are_read_widened_and_never_written(tmp_path, command):
    p = raw_file(tmp_path / "int.safetensors",
                 {"weight": {"dtype": "I32", "shape": [2, 2], "data_offsets": [0, 16]}},
                 np.array([[1, -2], [3, 1 << 20]], "<i4").tobytes())
    before = p.read_bytes()
    r = run("lookup", p, "1", "0")
    assert r.code == 0, r.err
    assert json.loads(r.out) == [[3.0, float(1 << 20)], [1.0, -2.0]]
    r = run(*[a.format(p=p) for a in command])
    assert_single_error_line(r, str(p), "has dtype I32, read as float32 but not written")
    assert p.read_bytes() == before


def test_info_lists_tensors_of_a_file_without_table(tmp_path):
    p = raw_file(tmp_path / "x.safetensors",
                 {"b": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16)
    r = run("info", p, "--json")
    assert r.code == 0, r.err
    facts = json.loads(r.out)
    assert facts["table"] is None and facts["tensors"][0]["name"] == "b"
    assert "no 2-D tensor" in facts["table_error"]


def test_unknown_metadata_survives_in_place_and_rewrite(tmp_path, monkeypatch):
    w = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32) * 3
    p = tmp_path / "t.safetensors"
    create(p, {"weight": w}, Config(), extra_metadata={"team": "search", "note": "ünïcode"})
    assert run("freeze", p).code == 0
    assert st.read_header(p).metadata["team"] == "search"
    monkeypatch.setenv("EMBTOOL_REWRITE_BYTES", "0")  # force the whole-file rewrite path
    ino = p.stat().st_ino
    assert run("renorm", p, "--max-norm", "1").code == 0
    assert p.stat().st_ino != ino  # rewritten
    meta = st.read_header(p).metadata
    assert meta["team"] == "search" and meta["note"] == "ünïcode" and meta["embtool.frozen"] == "true"


def test_freeze_patches_the_header_in_place(tmp_path):
    w = np.zeros((1000, 16), np.float32)
    p = make_table(tmp_path / "t.safetensors", w)
    before = p.read_bytes()
    ino = p.stat().st_ino
    assert run("freeze", p).code == 0
    after = p.read_bytes()
    assert p.stat().st_ino == ino and len(after) == len(before)
    h = st.read_header(p)
    assert after[h.data_start:] == before[h.data_start:]  # no data byte rewritten
    assert h.metadata["embtool.frozen"] == "true"


def test_freeze_of_a_foreign_file_without_header_room_rewrites_it(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    p = tmp_path / "m.safetensors"
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_file({"emb": w}, str(p), metadata={"k": "v"})
    r = run("freeze", p)
    assert r.code == 0, r.err
    with safe_open(p, "numpy") as f:
        assert np.array_equal(f.get_tensor("emb"), w)
        assert f.metadata()["k"] == "v" and f.metadata()["embtool.frozen"] == "true"


class _DiesWhile(vfs.OS):
    """Writes as the OS does until the chosen operation, which it does half of before "dying"."""

    def __init__(self, what):
        self.what = what

    def scatter(self, fd, base, row_bytes, rows, data):
        if self.what != "apply":
            return super().scatter(fd, base, row_bytes, rows, data)
        os.pwrite(fd, bytes(memoryview(data).cast("B"))[:row_bytes // 2], base + int(rows[0]) * row_bytes)
        raise SystemExit("killed")

    def pwrite(self, fd, data, offset):
        parts = data if isinstance(data, list) else [data]
        if self.what == "log" and len(parts) > 1:  # a frame: write all but its last bytes
            blob = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
            os.pwrite(fd, blob[:-5], offset)
            raise SystemExit("killed")
        return super().pwrite(fd, data, offset)


def _update_dies_while(p, what, rows):
    with vfs.using(_DiesWhile(what)):
        t = Table.open(p, write=True)
        with pytest.raises(SystemExit):
            t.update({"weight": (np.array(rows), np.full((len(rows), 4), -1, np.float32))})
        t.close()


def test_committed_transaction_is_finished_by_the_next_opener(tmp_path):
    w = np.arange(40, dtype=np.float32).reshape(10, 4)
    p = make_table(tmp_path / "t.safetensors", w)
    _update_dies_while(p, "apply", [2, 7])
    assert wal.log_path(p).exists()
    with Table.open(p) as t2:  # a reader finishes the interrupted write first
        expect = w.copy()
        expect[[2, 7]] = -1
        assert np.array_equal(t2.weight(), expect)
    with open(wal.log_path(p), "rb") as f:  # and marks it applied
        assert wal.up_to_date(wal.read_state(f.fileno()), vfs.current().boot_id())


def test_torn_transaction_is_dropped(tmp_path):
    w = np.arange(40, dtype=np.float32).reshape(10, 4)
    p = make_table(tmp_path / "t.safetensors", w)
    _update_dies_while(p, "log", [2])
    size = wal.log_path(p).stat().st_size
    with Table.open(p) as t2:
        assert np.array_equal(t2.weight(), w)
    assert wal.log_path(p).stat().st_size < size  # the torn frame is gone


COUNTER = """
import sys
from embtool.table import Table
for _ in range(int(sys.argv[2])):
    with Table.open(sys.argv[1], write=True) as t:
        n = int(t.metadata.get("test.counter", "0"))
        t.update(metadata={"test.counter": str(n + 1)})
"""


def test_concurrent_writers_lose_no_update(tmp_path):
    p = make_table(tmp_path / "t.safetensors", np.zeros((10, 4), np.float32))
    procs = [subprocess.Popen([sys.executable, "-c", COUNTER, str(p), "25"]) for _ in range(4)]
    assert [pr.wait(timeout=120) for pr in procs] == [0] * 4
    assert st.read_header(p).metadata["test.counter"] == "100"


@pytest.mark.parametrize("rows", [[], [0], [99], [0, 1, 2, 3], [5, 6, 40, 41, 42, 97, 99], list(range(100)),
                                  [3, 50]])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_read_rows_reads_what_the_map_holds(tmp_path, rows, dtype):
    """``Store.read_rows``: runs of consecutive rows in one pread each, the same values as the map."""
    w = np.random.default_rng(len(rows)).standard_normal((100, 7)).astype(dtype)
    p = make_table(tmp_path / "t.safetensors", w)
    with st.Store(p) as s:
        got = s.read_rows("weight", np.array(rows, np.int64))
        assert got.dtype == w.dtype and got.shape == (len(rows), 7)
        assert np.array_equal(got, s.array("weight")[rows]) and np.array_equal(got, w[rows])
        s._detach()  # as a shard mapped by a task keeps only its map
        assert np.array_equal(s.read_rows("weight", np.array(rows, np.int64)), w[rows])


def test_read_rows_of_a_truncated_file_is_an_error(tmp_path, monkeypatch):
    p = make_table(tmp_path / "t.safetensors", np.ones((100, 4), np.float32))
    with st.Store(p) as s:
        monkeypatch.setattr(st.os, "preadv", lambda fd, bufs, offset: 0)  # as past the end of a file
        with pytest.raises(FormatError, match="truncated while reading tensor 'weight'"):
            s.read_rows("weight", np.array([98, 99]))
