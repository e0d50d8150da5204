"""Row norms: numpy's ``np.linalg.norm(axis=1)`` bit for bit, and the norms cache (kept per table,
never used once the rows may have changed: embtool's writes, other programs' rewrites and
in-place writes, torn entries)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

import embtool
from embtool import norms as nm
from embtool.errors import FormatError
from embtool.table import Config, Table, create
from embtool.vocab import encode_vocab


@pytest.mark.parametrize("dim", list(range(1, 140)) + [255, 256, 257, 300, 511, 768, 1000, 4099])
def test_row_norms_are_numpys_bit_for_bit(dim):
    rng = np.random.default_rng(dim)
    rows = (rng.standard_normal((37, dim)) * rng.uniform(1e-3, 1e3, (37, 1))).astype(np.float32)
    assert np.array_equal(nm.row_norms(rows), np.linalg.norm(rows, axis=1))


def test_row_norms_of_special_values():
    rows = np.zeros((8, 50), np.float32)
    rows[1, 3] = np.inf
    rows[2, 4] = np.nan
    rows[3] = 3e30  # squares overflow
    rows[4] = 1e-30  # squares underflow
    rows[5, 7] = -0.0
    rows[6, ::2] = -2.5
    rows[7] = np.float32(1e19)
    with np.errstate(all="ignore"):
        want = np.linalg.norm(rows, axis=1)
    assert np.array_equal(nm.row_norms(rows), want, equal_nan=True)
    big = np.random.default_rng(1).standard_normal((nm.BLOCK_ROWS * 2 + 3, 12)).astype(np.float32)
    assert np.array_equal(nm.row_norms(big), np.linalg.norm(big, axis=1))


def make(path, rows=500, dim=16, seed=0, **tensors):
    w = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    create(path, {"weight": w, **encode_vocab([f"w{i}" for i in range(rows)]), **tensors},
           Config(), force=True)
    past = time.time() - 60  # not "racily" recent: the cache may be written
    os.utime(path, (past, past))
    return w


def entries(kind=".norms"):
    root = nm.cache_dir()
    return sorted(n for n in os.listdir(root) if n.endswith(kind)) if root.exists() else []


def query(path, word="w3"):
    with embtool.open(path) as t:
        return t.most_similar(word, topn=5)


def uncached(path, word="w3", monkeypatch=None):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBTOOL_CACHE_DIR", "off")
        return query(path, word)


def test_norms_are_kept_and_reused(tmp_path, monkeypatch):
    path = tmp_path / "t.safetensors"
    w = make(path)
    first = query(path)
    assert len(entries()) == 1
    monkeypatch.setattr(nm, "row_norms", lambda *a, **k: pytest.fail("norms recomputed"))
    with embtool.open(path) as t:
        assert np.array_equal(t.norms.get(), np.linalg.norm(w, axis=1))
        assert t.most_similar("w3", topn=5) == first


def test_cache_can_be_turned_off_and_a_bad_cache_dir_is_no_error(tmp_path, monkeypatch):
    path = tmp_path / "t.safetensors"
    make(path)
    want = query(path)
    monkeypatch.setenv("EMBTOOL_CACHE_DIR", "off")
    assert query(path) == want
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("EMBTOOL_CACHE_DIR", str(blocker))  # not a directory
    assert query(path) == want


def test_embtool_writes_drop_the_norms(tmp_path):
    path = tmp_path / "t.safetensors"
    w = make(path)
    query(path)
    with Table.open(path, write=True) as t:  # row 7 becomes row 3's closest neighbour
        t.update({"weight": (np.array([7]), 10 * w[3:4])})
    assert entries() == []
    got = query(path)
    assert got == uncached(path) and got[0][0] == "w7" and abs(got[0][1] - 1) < 1e-6
    query(path)
    with Table.open(path, write=True) as t:  # a rewrite (new file) drops them too
        t.rewrite({"weight": np.ones((500, 16), np.float32)})
    assert entries() == []


def test_in_memory_norms_follow_writes_of_the_same_table(tmp_path):
    path = tmp_path / "t.safetensors"
    w = make(path)
    with Table.open(path, write=True) as t:
        t.most_similar("w1")
        t.update({"weight": (np.array([2]), 9 * w[3:4])})
        got = t.most_similar("w3", topn=5)
    assert got == uncached(path) and got[0][0] == "w2"


def test_other_programs_rewriting_the_file_are_noticed(tmp_path):
    from safetensors.numpy import load_file, save_file

    path = tmp_path / "t.safetensors"
    make(path)
    query(path)
    tensors = load_file(path)
    tensors["weight"][10:20] *= 3  # e.g. PyTorch saving a fine-tuned state_dict
    save_file(tensors, path)
    past = time.time() - 30
    os.utime(path, (past, past))
    got = query(path, "w10")
    assert got == uncached(path, "w10") and got[0][1] <= 1


def test_in_place_writes_by_other_programs_are_noticed(tmp_path):
    path = tmp_path / "t.safetensors"
    w = make(path)
    query(path)
    with Table.open(path) as t:
        offset = t.store.offset_of("weight") + 12 * 16 * 4
    with open(path, "r+b") as f:  # same size, same inode: only the times change
        f.seek(offset)
        f.write((10 * w[3]).tobytes())
    got = query(path)
    assert got == uncached(path) and got[0][0] == "w12" and abs(got[0][1] - 1) < 1e-6


def test_a_table_modified_just_now_is_not_cached(tmp_path):
    path = tmp_path / "t.safetensors"
    make(path)
    os.utime(path)  # "now": a write in the same timestamp tick could follow unseen
    query(path)
    assert entries() == []


def test_torn_or_foreign_entries_are_ignored(tmp_path):
    path = tmp_path / "t.safetensors"
    make(path)
    want = query(path)
    (entry,) = entries()
    full = nm.cache_dir() / entry
    data = bytearray(full.read_bytes())
    data[-10] ^= 0x40  # one flipped bit in the norms
    full.write_bytes(bytes(data))
    assert query(path) == want
    full.write_bytes(data[:len(data) // 2])  # torn by a power loss
    assert query(path) == want
    full.write_bytes(b"")
    assert query(path) == want


def test_entries_of_deleted_tables_and_the_oldest_go(tmp_path, monkeypatch):
    a, b, c = (tmp_path / f"{x}.safetensors" for x in "abc")
    for p in (a, b, c):
        make(p, rows=400)
    query(a)
    query(b)
    assert len(entries()) == 2
    a.unlink()
    query(c)  # writing an entry tidies the directory
    assert len(entries()) == 2
    monkeypatch.setattr(nm, "MAX_CACHE_BYTES", 2500)  # room for one entry of 400 norms
    make(a, rows=400)
    query(a)
    assert len(entries()) == 1
    with embtool.open(a) as t:
        assert t.norms.get() is not None  # the newest stays


def test_tensors_of_one_file_have_their_own_norms(tmp_path):
    path = tmp_path / "t.safetensors"
    other = np.random.default_rng(5).standard_normal((500, 8)).astype(np.float32)
    make(path, other=other)
    with Table.open(path, tensor="other") as t:
        got = t.most_similar(3, topn=4)
        assert np.array_equal(t.norms.get(), np.linalg.norm(other, axis=1))
    query(path)
    assert len(entries()) == 2
    with Table.open(path, tensor="other") as t:
        assert t.most_similar(3, topn=4) == got


def test_a_restricted_search_keeps_the_norms_of_every_row(tmp_path):
    path = tmp_path / "t.safetensors"
    w = make(path, rows=300)
    with embtool.open(path) as t:
        t.most_similar("w3", topn=5, restrict_vocab=100)
    with embtool.open(path) as t:
        assert np.array_equal(t.norms.get(), np.linalg.norm(w, axis=1))


def test_a_checked_vocabulary_is_not_checked_again_until_the_file_changes(tmp_path, monkeypatch):
    from embtool import vocab

    path = tmp_path / "t.safetensors"
    make(path)
    checks = []
    check = vocab.check_arrays
    monkeypatch.setattr(vocab, "check_arrays", lambda *a, **k: checks.append(1) or check(*a, **k))
    assert query(path) == query(path)
    assert len(checks) == 1 and len(entries(".vocab")) == 1
    with Table.open(path) as t:  # a word past the 8 bytes compared at once, in place
        order = t.store.offset_of("vocab.order")
        first, second = np.array(t.store.array("vocab.order")[:2])
    with open(path, "r+b") as f:  # swapped: the order is no longer sorted (only the times change)
        f.seek(order)
        f.write(np.array([second, first], np.int64).tobytes())
    with pytest.raises(FormatError, match="not sorted by word"):
        query(path)
    assert len(checks) == 2
