"""Sharded tables: the index format, conversions bit for bit both ways, and every read giving the
same bytes as the same table in one file, on threads and on a Dask cluster of two worker
processes (one cluster for this module)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from embtool import similar
from embtool.config import Config
from embtool.errors import ConfigError, EmbtoolError, FormatError, OutputExistsError
from embtool.evaluate import evaluate_analogies, evaluate_pairs
from embtool.ops import init_table, lookup, lookup_bag
from embtool.pretrained import export, load_pretrained
from embtool.sharded import (Index, ShardedTable, is_index, plan_rows, shard_table,
                             unshard_table)
from embtool.stats import table_stats
from embtool.table import Table, create

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
GLOVE = SAMPLE / "glove.6B.50d.10k.txt.gz"


def files_of(index: Path) -> dict[str, bytes]:
    """The index and every file it names, by name: the bytes of a sharded table."""
    meta = json.loads(index.read_text())
    names = [index.name] + [s["file"] for s in meta["shards"]] + ([meta["vocab"]] if meta["vocab"] else [])
    return {n: (index.parent / n).read_bytes() for n in names}


@pytest.fixture(scope="module")
def cluster():
    """A Dask LocalCluster of two worker processes; its scheduler's address."""
    if os.environ.get("CI"):
        import distributed
    else:
        distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as c:
        yield c.scheduler_address


@pytest.fixture(params=["threads", "dask"])
def scheduler(request):
    """Where the sharded table's tasks run: threads of this process, or the cluster (tests that
    run many cases on threads run a few of them on the cluster: ``on_both``)."""
    return None if request.param == "threads" else request.getfixturevalue("cluster")


def on_both(names: str, cases: list, on_cluster: list):
    """Parametrize ``names`` + scheduler: every case on threads, those of ``on_cluster`` (indices)
    on the cluster as well."""
    rows = [(*c, "threads") if isinstance(c, tuple) else (c, "threads") for c in cases]
    rows += [(*cases[i], "dask") if isinstance(cases[i], tuple) else (cases[i], "dask") for i in on_cluster]
    return pytest.mark.parametrize(f"{names}, scheduler", rows, indirect=["scheduler"])


@pytest.fixture(scope="module")
def glove(tmp_path_factory):
    """The GloVe sample as one file and as sharded tables: 3 shards, and shards of 997 rows."""
    d = tmp_path_factory.mktemp("glove")
    load_pretrained(GLOVE, d / "g.safetensors")
    shard_table(d / "g.safetensors", d / "g3.index.json", shards=3)
    shard_table(d / "g.safetensors", d / "g997.index.json", rows_per_shard=997)
    return d


def odd_weight(rng, n=3001, dim=24):
    w = rng.standard_normal((n, dim)).astype(np.float32)
    w[4] = 0
    w[9] = -0.0
    w[1500] = w[11]  # duplicates across shards
    w[2999] = w[11]
    w[30, 2] = np.nan
    w[2000] = w[30]
    w[40, 0] = np.inf
    w[60] = 1e-30
    w[61] = 1e30
    return w


@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """Tables with zero, non-finite and duplicate rows in every dtype, with a padding row: one
    file and 5 shards (one of a single row)."""
    d = tmp_path_factory.mktemp("odd")
    w = odd_weight(np.random.default_rng(7))
    for dtype in ("F32", "F64", "F16", "BF16"):
        create(d / f"{dtype}.safetensors", {"weight": w}, Config(padding_idx=7), weight_dtype=dtype)
        shard_table(d / f"{dtype}.safetensors", d / f"{dtype}.index.json", rows_per_shard=1000)
    return d


def both(folder: Path, name: str, index: str | None = None, scheduler=None):
    """The one-file table and the sharded one."""
    one = Table.open(folder / f"{name}.safetensors")
    many = ShardedTable.open(folder / f"{index or name}.index.json", scheduler=scheduler)
    return one, many


# -- the index ------------------------------------------------------------------------------------

def test_index_is_told_apart_from_a_hugging_face_index(glove, tmp_path):
    assert is_index(glove / "g3.index.json")
    hf = tmp_path / "model.safetensors.index.json"
    hf.write_text(json.dumps({"metadata": {"total_size": 8}, "weight_map": {"w": "a.safetensors"}}))
    assert not is_index(hf)
    assert not is_index(glove / "g.safetensors") and not is_index(tmp_path / "missing.index.json")
    index = Index.read(glove / "g3.index.json")
    assert index.shape == (10000, 50) and index.ranges == [(0, 3334), (3334, 6667), (6667, 10000)]
    assert index.vocab == "g3.vocab.safetensors" and index.metadata["embtool.frozen"] == "true"
    assert Index.parse(index.encode(), index.path) == index


@pytest.mark.parametrize("change, message", [
    (lambda o: "not json", "not a valid sharded-table index"),
    (lambda o: {**o, "format_version": 2}, "format version 2 is not supported"),
    (lambda o: {**o, "shape": [10000]}, "'shape' must be [rows, dim]"),
    (lambda o: {**o, "dtype": "I8"}, "'dtype' must be one of"),
    (lambda o: {**o, "vocab": "../x.safetensors"}, "'vocab' must be null or a file name beside it"),
    (lambda o: {**o, "shards": o["shards"][1:]}, "must cover the rows in order from row 0"),
    (lambda o: {**o, "shards": o["shards"][:2]}, "the shards hold 6667 rows, the table has 10000"),
    (lambda o: {**o, "shards": [{**o["shards"][0], "file": "a/b"}] + o["shards"][1:]}, "shard 0 must be"),
])
def test_index_faults_are_one_line_naming_the_file(glove, tmp_path, change, message):
    obj = json.loads((glove / "g3.index.json").read_text())
    bad = tmp_path / "bad.index.json"
    new = change(obj)
    bad.write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(FormatError) as err:
        ShardedTable.open(bad)
    assert str(bad) in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


def test_shard_files_changed_outside_are_refused(glove, tmp_path):
    for name in files_of(glove / "g3.index.json"):
        shutil.copy(glove / name, tmp_path / name)
    index = tmp_path / "g3.index.json"
    with open(tmp_path / "g3-00002-of-00003.safetensors", "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(FormatError, match="g3-00002-of-00003.safetensors has .* bytes, the index says"):
        ShardedTable.open(index)
    (tmp_path / "g3-00002-of-00003.safetensors").unlink()
    with pytest.raises(FormatError, match="shard g3-00002-of-00003.safetensors is missing"):
        ShardedTable.open(index)


def test_plan_rows():
    assert plan_rows(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert plan_rows(10, rows_per_shard=4) == [(0, 4), (4, 8), (8, 10)]
    assert plan_rows(0, 1) == [(0, 0)]
    with pytest.raises(ConfigError, match="at most one shard a row"):
        plan_rows(3, 4)
    with pytest.raises(ConfigError, match="one of them"):
        plan_rows(3, 1, 1)


# -- conversions, bit for bit -------------------------------------------------------------------

def test_shard_then_unshard_gives_the_file_back_byte_for_byte(glove, odd, tmp_path):
    for index, one in [(glove / "g3.index.json", glove / "g.safetensors"),
                       (glove / "g997.index.json", glove / "g.safetensors")] + \
            [(odd / f"{d}.index.json", odd / f"{d}.safetensors") for d in ("F32", "F64", "F16", "BF16")]:
        out = tmp_path / "u.safetensors"
        unshard_table(index, out, force=True)
        assert out.read_bytes() == one.read_bytes(), index


def test_unshard_then_shard_gives_the_shards_back_byte_for_byte(glove, tmp_path, scheduler):
    unshard_table(glove / "g997.index.json", tmp_path / "u.safetensors")
    shard_table(tmp_path / "u.safetensors", tmp_path / "g997.index.json", rows_per_shard=997, scheduler=scheduler)
    assert files_of(tmp_path / "g997.index.json") == files_of(glove / "g997.index.json")
    # re-sharding a sharded table reads it across its shards
    shard_table(glove / "g997.index.json", tmp_path / "g3.index.json", shards=3)
    assert files_of(tmp_path / "g3.index.json") == files_of(glove / "g3.index.json")


def test_optimizer_state_and_other_tensor_names_are_sharded_too(tmp_path):
    from embtool.training import Batch, train_step

    rng = np.random.default_rng(3)
    create(tmp_path / "t.safetensors", {"weight": rng.standard_normal((50, 4)).astype(np.float32)}, Config())
    ids = rng.integers(0, 50, 30)
    train_step(tmp_path / "t.safetensors", [Batch(ids, rng.standard_normal((30, 4)).astype(np.float32), "i", "g")],
               optimizer="adam")
    summary = shard_table(tmp_path / "t.safetensors", tmp_path / "s.index.json", shards=4)
    assert summary["tensors"] == ["weight", "optim.exp_avg", "optim.exp_avg_sq"]
    unshard_table(tmp_path / "s.index.json", tmp_path / "u.safetensors")
    assert (tmp_path / "u.safetensors").read_bytes() == (tmp_path / "t.safetensors").read_bytes()
    from embtool import store as st

    st.write_file(tmp_path / "m.safetensors", {"emb": np.ones((6, 2), np.float32)}, {})
    shard_table(tmp_path / "m.safetensors", tmp_path / "m.index.json", shards=2)
    unshard_table(tmp_path / "m.index.json", tmp_path / "mu.safetensors")
    assert (tmp_path / "mu.safetensors").read_bytes() == (tmp_path / "m.safetensors").read_bytes()
    st.write_file(tmp_path / "x.safetensors", {"weight": np.ones((6, 2), np.float32),
                                               "bias": np.ones(2, np.float32)}, {})
    with pytest.raises(ConfigError, match="holds tensors other than the table 'weight'.*bias"):
        shard_table(tmp_path / "x.safetensors", tmp_path / "x.index.json", shards=2)
    assert not list(tmp_path.glob("x*.index.json")) and not list(tmp_path.glob("x-*"))


def test_outputs_are_refused_without_force_and_named_index_json(glove, tmp_path):
    with pytest.raises(OutputExistsError):
        shard_table(glove / "g.safetensors", glove / "g3.index.json", shards=3)
    with pytest.raises(ConfigError, match="must be named NAME.index.json"):
        shard_table(glove / "g.safetensors", tmp_path / "g.json", shards=3)
    with pytest.raises(OutputExistsError):
        unshard_table(glove / "g3.index.json", glove / "g.safetensors")


def test_init_and_load_pretrained_write_shards_that_unshard_to_the_one_file(tmp_path):
    for dtype in ("F32", "BF16"):
        init_table(tmp_path / f"i{dtype}.safetensors", 1003, 7, seed=4, dtype=dtype, config=Config(padding_idx=500))
        init_table(tmp_path / f"i{dtype}.index.json", 1003, 7, seed=4, dtype=dtype, config=Config(padding_idx=500),
                   rows_per_shard=100)
        unshard_table(tmp_path / f"i{dtype}.index.json", tmp_path / "u.safetensors", force=True)
        assert (tmp_path / "u.safetensors").read_bytes() == (tmp_path / f"i{dtype}.safetensors").read_bytes()
    load_pretrained(SAMPLE / "small.vec", tmp_path / "v.safetensors", unk_token="<unk>")
    load_pretrained(SAMPLE / "small.vec", tmp_path / "v.index.json", unk_token="<unk>", shards=3)
    unshard_table(tmp_path / "v.index.json", tmp_path / "u.safetensors", force=True)
    assert (tmp_path / "u.safetensors").read_bytes() == (tmp_path / "v.safetensors").read_bytes()


# -- reads: the same bytes as one file ---------------------------------------------------------------

@on_both("dtype", ["F32", "F64", "F16", "BF16"], [3])
def test_lookups_and_bags_are_the_same_bytes(odd, dtype, scheduler):
    rng = np.random.default_rng(11)
    one, many = both(odd, dtype, scheduler=scheduler)
    with one, many:
        ids = rng.integers(0, 3001, (40, 9))
        ids[0, :3] = 7  # the padding row
        for max_norm in (None, 1.0):
            assert lookup(many, ids, max_norm=max_norm).tobytes() == lookup(one, ids, max_norm=max_norm).tobytes()
        psw = rng.standard_normal(ids.shape).astype(np.float32)
        for mode in ("sum", "mean", "max"):
            for max_norm in (None, 0.5):
                a = lookup_bag(one, ids, mode=mode, max_norm=max_norm)
                b = lookup_bag(many, ids, mode=mode, max_norm=max_norm)
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (mode, max_norm)
        no_pad = np.where(ids == 7, 8, ids)  # padding_idx set but unused: torch's unfused sums
        for i in (ids, no_pad):
            assert lookup_bag(many, i, mode="sum", per_sample_weights=psw).tobytes() == \
                lookup_bag(one, i, mode="sum", per_sample_weights=psw).tobytes()
        offsets = np.array([0, 5, 5, 100, 359])
        assert lookup_bag(many, ids.reshape(-1), offsets).tobytes() == lookup_bag(one, ids.reshape(-1), offsets).tobytes()


def _neighbours(weight, vocab, queries, **kw):
    return [similar.most_similar(weight, vocab, pos, neg, topn=25, **kw) for pos, neg in queries]


def test_similar_and_evaluate_give_the_same_keys_and_scores(glove, scheduler, monkeypatch):
    one, many = both(glove, "g", "g997", scheduler)
    with one, many:
        v = one.vocab
        king, man, woman, paris = (v.find(w) for w in ("king", "man", "woman", "paris"))
        vec = np.linspace(-1, 1, 50).astype(np.float32)
        queries = [([king], []), ([king, woman], [man]), ([paris, vec], []), ([vec], [king])]
        for kw in ({}, {"restrict_vocab": 4321}, {"chunk_rows": 1234}):
            assert _neighbours(many.weight(), many.vocab, queries, **kw) == \
                _neighbours(one.weight(), v, queries, **kw), kw
        # scans whose chunks straddle shards: every chunk is scored in one BLAS call, as on one file
        monkeypatch.setattr(similar, "CHUNK_BYTES", 50 * 4 * 1500)
        assert _neighbours(many.weight(), many.vocab, queries) == _neighbours(one.weight(), v, queries)
        analogies = (SAMPLE / "questions-words.sample.txt").read_text().splitlines()
        if scheduler:  # a question whose top 5 the batched pass cannot settle is a search of its own
            analogies = analogies[:24]
        assert evaluate_analogies(many.weight(), many.vocab, analogies) == evaluate_analogies(one.weight(), v, analogies)
        pairs = SAMPLE / "wordsim353.tsv"
        assert evaluate_pairs(many.weight(), many.vocab, pairs) == evaluate_pairs(one.weight(), v, pairs)


def test_similar_keeps_and_uses_each_shards_row_norms(glove, scheduler, monkeypatch):
    """With the row-norms cache (embtool.norms) each shard file gets its own entry, computed by
    the task that scans it; later searches use them: the same keys and scores as the one file
    (its norms cached too), single and batched, restricted or not."""
    import embtool.sharded as sharded
    from embtool.norms import cache_dir

    for f in glove.iterdir():  # written long enough ago for their norms to be kept (norms.RACY_NS)
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns - 10**10))
    one, many = both(glove, "g", "g997", scheduler)
    hits = []
    known = sharded._PartNorms.known
    monkeypatch.setattr(sharded._PartNorms, "known", lambda self: hits.append(known(self)) or hits[-1])
    with one, many:
        v = one.vocab
        king, man, woman = (v.find(w) for w in ("king", "man", "woman"))
        queries = [([king], []), ([king, woman], [man]), ([np.linspace(-1, 1, 50).astype(np.float32)], [])]
        for kw in ({}, {"restrict_vocab": 4321}):
            want = _neighbours(one.weight(), v, queries, norms=one.norms, **kw)
            assert _neighbours(many.weight(), many.vocab, queries, norms=many.norms, **kw) == want, kw
            assert _neighbours(many.weight(), many.vocab, queries, norms=many.norms, **kw) == want, kw
            assert similar.most_similar_many(many.weight(), many.vocab, queries, topn=25, norms=many.norms,
                                             **kw) == want
        if scheduler is None:  # the workers keep theirs in their own cache directory
            entries = list(cache_dir().glob("*.norms"))
            assert len(entries) == len(many.shards) + 1  # each shard's, and the one file's
            assert hits[0] is None and all(h is not None for h in hits[1:])
    # chunks that straddle shards (each task keeps the shards whose chunks are all its own),
    # against the one file scanned in the same chunks
    monkeypatch.setattr(similar, "CHUNK_BYTES", 50 * 4 * 1500)
    monkeypatch.setenv("EMBTOOL_CACHE_DIR", str(cache_dir().parent / "again"))
    hits.clear()
    one, many = both(glove, "g", "g997", scheduler)
    with one, many:
        want = _neighbours(one.weight(), one.vocab, queries, chunk_rows=1500)
        for _ in range(2):
            assert _neighbours(many.weight(), many.vocab, queries, norms=many.norms) == want
        if scheduler is None:
            assert len(list(cache_dir().glob("*.norms"))) == len(many.shards)
            assert hits[0] is None and hits[-1] is not None


@on_both("dtype", ["F32", "F16", "BF16"], [2])
def test_stats_are_the_same(odd, dtype, scheduler, monkeypatch):
    one, many = both(odd, dtype, scheduler=scheduler)
    with one, many:
        monkeypatch.setattr(similar, "CHUNK_BYTES", 24 * 4 * 700)  # chunks across shard boundaries
        got, want = table_stats(many.weight(), sample=7), table_stats(one.weight(), sample=7)
        assert got == want
        assert want["duplicate_rows"]["count"] >= 3 and want["nonfinite_rows"]["count"] >= 3


@pytest.mark.parametrize("fmt", ["glove", "word2vec-binary", "npy"])
def test_export_is_the_same_bytes(odd, fmt, tmp_path):
    load_pretrained(SAMPLE / "small.vec", tmp_path / "v.safetensors")
    shard_table(tmp_path / "v.safetensors", tmp_path / "v.index.json", shards=3)
    for folder, name in [(tmp_path, "v"), (odd, "BF16"), (odd, "F64")]:
        one, many = both(folder, name)
        with one, many:
            export(one, tmp_path / "a.out", fmt=fmt, force=True)
            export(many, tmp_path / "b.out", fmt=fmt, force=True)
            assert (tmp_path / "a.out").read_bytes() == (tmp_path / "b.out").read_bytes(), (name, fmt)


# -- writes: the same bytes as one file ---------------------------------------------------------

def unsharded(index: Path, tmp_path: Path) -> bytes:
    out = tmp_path / "unsharded.safetensors"
    unshard_table(index, out, force=True)
    return out.read_bytes()


@pytest.fixture
def pair(tmp_path):
    """A fresh one-file table (F32, max_norm 1.5, padding row 3) and the same in 4 shards."""
    def make(dtype="F32", **config):
        w = (np.random.default_rng(5).standard_normal((2003, 12)) * 1.5).astype(np.float32)
        create(tmp_path / "t.safetensors", {"weight": w}, Config(**config), weight_dtype=dtype, force=True)
        for f in tmp_path.glob("t-0*"):
            f.unlink()
        (tmp_path / "t.index.json").unlink(missing_ok=True)
        shard_table(tmp_path / "t.safetensors", tmp_path / "t.index.json", shards=4)
        return tmp_path / "t.safetensors", tmp_path / "t.index.json"
    return make


@on_both("dtype", ["F32", "BF16", "F16"], [])
def test_renorm_write_back_and_freeze_write_the_same_bytes(pair, dtype, scheduler, tmp_path, monkeypatch):
    from embtool.store import set_frozen as set_frozen_file
    from embtool.ops import renorm
    from embtool.sharded import set_frozen

    one, many = pair(dtype, padding_idx=3)
    rng = np.random.default_rng(6)
    for rewrite_bytes in (None, "2000"):  # rows sent back, or shards rewritten by the tasks
        if rewrite_bytes:
            monkeypatch.setenv("EMBTOOL_REWRITE_BYTES", rewrite_bytes)
        ids = rng.integers(0, 2003, (30, 4))
        steps = [lambda t: renorm(t, ids, max_norm=1.7).to_dict(),
                 lambda t: (lambda r: (r.to_dict(), r.changed_ids.tolist()))(renorm(t, max_norm=1.5)),
                 lambda t: renorm(t, max_norm=0.1, dry_run=True).to_dict(),
                 lambda t: lookup(t, ids, max_norm=1.2, write_back=True).tobytes(),
                 lambda t: lookup_bag(t, ids, max_norm=1.1, write_back=True).tobytes()]
        for step in steps:  # a table file is closed after a rewrite: each step opens it anew
            with Table.open(one, write=True) as a, ShardedTable.open(many, write=True, scheduler=scheduler) as b:
                assert step(b) == step(a)
            assert unsharded(many, tmp_path) == one.read_bytes()
    assert set_frozen(many, True) and set_frozen_file(one, True)
    assert not set_frozen(many, True)
    assert unsharded(many, tmp_path) == one.read_bytes()
    assert not list(tmp_path.glob(".*"))  # no temporary file left


TRAIN_CASES = [
    ({}, "sgd", {}), ({"padding_idx": 3, "max_norm": 1.0}, "sgd", {"momentum": 0.9, "nesterov": True}),
    ({"scale_grad_by_freq": True}, "adagrad", {"lr_decay": 0.1}), ({"sparse": True}, "sparse-adam", {}),
    ({"sparse": True, "padding_idx": 1500}, "sgd", {}), ({"max_norm": 2.0}, "adam", {"weight_decay": 0.1}),
    ({}, "adamw", {"amsgrad": True}), ({}, "sgd", {"weight_decay": 0.1}),
]


@on_both("config, optimizer, hparams", TRAIN_CASES, [2, 3, 5])
def test_train_steps_write_the_same_bytes(pair, config, optimizer, hparams, scheduler, tmp_path):
    from embtool.shardtrain import train_step
    from embtool.training import Batch, train_step as train_file

    one, many = pair(**config)
    rng = np.random.default_rng(8)
    for call in range(2):  # a fresh optimizer state, then the stored one; the second call hits one shard
        batches = []
        for _ in range(2):
            ids = rng.integers(0, 2003 if call == 0 else 400, (6, 5))
            ids[0, :2] = config.get("padding_idx", 0) or 0
            batches.append(Batch(ids, rng.standard_normal((6, 5, 12)).astype(np.float32), "ids", "grad"))
        want = train_file(one, batches, optimizer=optimizer, hparams=hparams)
        with ShardedTable.open(many, write=True, scheduler=scheduler) as t:
            from embtool.shardtrain import train

            got = train(t, batches, optimizer=optimizer, hparams=hparams)
        assert {**got, "table": ""} == {**want, "table": ""}
        assert unsharded(many, tmp_path) == one.read_bytes(), call
    with pytest.raises(EmbtoolError, match="optimizer state is"):
        train_step(many, batches, optimizer="sgd" if optimizer != "sgd" else "adagrad")
    assert not list(tmp_path.glob(".*"))


def test_a_scheduler_without_dask_is_one_line_with_the_hint(monkeypatch, glove):
    import sys

    from helpers import assert_single_error_line, invoke

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    result = invoke("shard", glove / "g.safetensors", glove / "nodask.index.json", "-k", "2",
                    "--scheduler", "127.0.0.1:8786")
    assert_single_error_line(result, "--scheduler 127.0.0.1:8786 needs Dask: pip install 'embtool[dask]'")
    assert not list(glove.glob("nodask*"))
    result = invoke("shard", glove / "g.safetensors", glove / "nodask.index.json", "-k", "2",
                    env={"EMBTOOL_SCHEDULER": "10.0.0.1:8786"})
    assert_single_error_line(result, "needs Dask")


# -- the command line: the same output for the index as for the file --------------------------------

READS = [
    ("lookup", "{t}", "1", "5", "9999"), ("lookup", "{t}", "-w", "king", "queen", "-f", "csv"),
    ("lookup", "{t}", "[[1, 2, 3], [4, 5, 9000]]", "--mode", "max"), ("lookup", "{t}", "7", "8", "--max-norm", "1"),
    ("similar", "{t}", "king", "-k", "7"), ("similar", "{t}", "king", "woman", "-n", "man", "-f", "tsv"),
    ("similar", "{t}", "paris", "--restrict-vocab", "5000"),
    ("evaluate", "{t}", "--analogies", str(SAMPLE / "questions-words.sample.txt"), "--pairs", str(SAMPLE / "wordsim353.tsv")),
]


@pytest.mark.parametrize("args", READS, ids=[" ".join(a[:1] + a[2:4]) for a in READS])
def test_read_commands_print_the_same(glove, args):
    from helpers import invoke

    one = invoke(*[a.format(t=glove / "g.safetensors") for a in args])
    many = invoke(*[a.format(t=glove / "g3.index.json") for a in args])
    assert one.code == 0 and (many.code, many.stdout_bytes) == (0, one.stdout_bytes)
    for fmt in (() if args[0] != "lookup" or len(args) > 4 else ("glove", "word2vec-binary", "npy")):
        assert invoke("export", glove / "g.safetensors", glove / f"a.{fmt}", "--format", fmt, "--force").code == 0
        assert invoke("export", glove / "g3.index.json", glove / f"b.{fmt}", "--format", fmt, "--force").code == 0
        assert (glove / f"a.{fmt}").read_bytes() == (glove / f"b.{fmt}").read_bytes()


WRITES = [
    ("renorm", "{t}", "--max-norm", "5", "--json"), ("lookup", "{t}", "[3, 4, 1000, 9999]", "--max-norm", "4", "--write-back"),
    ("unfreeze", "{t}"), ("train-step", "{t}", "-i", "{ids}", "--grad", "{grad}", "--optimizer", "adagrad", "--json"),
    ("train-step", "{t}", "-i", "{ids}", "--grad", "{grad}", "--json"), ("freeze", "{t}"),
    ("info", "{t}", "--stats", "--json"),
]


@pytest.mark.parametrize("where", ["threads", "cluster"])
def test_write_commands_change_the_same_bytes(glove, tmp_path, where, request):
    """The writers, then info --stats, through the command line; on the cluster as well."""
    from helpers import invoke

    for name in files_of(glove / "g3.index.json"):
        shutil.copy(glove / name, tmp_path / name)
    shutil.copy(glove / "g.safetensors", tmp_path / "g.safetensors")
    rng = np.random.default_rng(4)
    np.save(tmp_path / "ids.npy", rng.integers(0, 10000, (64, 3)))
    np.save(tmp_path / "grad.npy", rng.standard_normal((64, 3, 50), dtype=np.float32))
    extra = ["--scheduler", request.getfixturevalue("cluster")] if where == "cluster" else []
    for args in WRITES:
        fill = {"ids": tmp_path / "ids.npy", "grad": tmp_path / "grad.npy"}
        one = invoke(*[a.format(t=tmp_path / "g.safetensors", **fill) for a in args])
        own = extra if args[0] not in ("freeze", "unfreeze") else []  # no per-shard work there
        many = invoke(*[a.format(t=tmp_path / "g3.index.json", **fill) for a in args], *own)
        assert one.code == 0 and many.code == 0, (args, one.err, many.err)
        out_one, out_many = one.out.replace(str(tmp_path / "g.safetensors"), "T"), \
            many.out.replace(str(tmp_path / "g3.index.json"), "T")
        if args[0] == "info":  # the facts of the files differ (names, sizes); the table's and its stats do not
            out_one, out_many = (json.dumps({k: json.loads(o)[k] for k in ("table", "metadata", "stats")})
                                 for o in (out_one, out_many))
        assert out_many == out_one, args
        assert unsharded(tmp_path / "g3.index.json", tmp_path) == (tmp_path / "g.safetensors").read_bytes(), args


@pytest.mark.slow
def test_a_worker_killed_mid_command_fails_cleanly_or_is_retried(cluster, tmp_path):
    """SIGKILL the worker running a task of a real `renorm` on the cluster whose tasks write new
    shard files (EMBTOOL_REWRITE_BYTES=0): the command succeeds (the task ran again on the other
    worker) with the one file's bytes, or fails with one error line and no shard changed; no file
    is left behind."""
    import signal
    import subprocess
    import sys
    import time

    import distributed

    init_table(tmp_path / "t.safetensors", 192_000, 16, seed=2)
    shard_table(tmp_path / "t.safetensors", tmp_path / "t.index.json", shards=16)  # tasks queue up
    before = files_of(tmp_path / "t.index.json")
    env = {**os.environ, "EMBTOOL_REWRITE_BYTES": "0"}
    with distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        pids = client.run(os.getpid)  # worker address -> pid
        proc = subprocess.Popen([sys.executable, "-m", "embtool", "renorm", tmp_path / "t.index.json",
                                 "--max-norm", "4", "--scheduler", cluster], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        victim, deadline = None, time.monotonic() + 60
        while victim is None and time.monotonic() < deadline and proc.poll() is None:
            busy = [w for w, tasks in client.processing().items() if tasks]
            victim = busy[0] if busy else None
            time.sleep(0.005)
        assert victim is not None, "no task was seen running"
        os.kill(pids[victim], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        client.wait_for_workers(2, timeout=60)  # the nanny starts it again: later tests have two
    if proc.returncode == 0:
        from embtool.ops import renorm

        with Table.open(tmp_path / "t.safetensors", write=True) as t:
            renorm(t, max_norm=4)
        assert unsharded(tmp_path / "t.index.json", tmp_path) == (tmp_path / "t.safetensors").read_bytes()
    else:
        lines = err.decode().strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), err
        assert files_of(tmp_path / "t.index.json") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_empty_table_shards_too(tmp_path):
    from helpers import invoke

    for name in ("e.safetensors", "e.index.json"):
        assert invoke("init", tmp_path / name, "-n", "0", "-d", "4", "--seed", "1",
                      *(["--shards", "1"] if "index" in name else [])).code == 0
    outs = []
    for name in ("e.safetensors", "e.index.json"):
        stats = json.loads(invoke("info", tmp_path / name, "--stats", "--json").out)["stats"]
        lookup = invoke("lookup", tmp_path / name, "[]").out
        assert invoke("export", tmp_path / name, tmp_path / f"{name}.txt").code == 0
        outs.append((stats, lookup, (tmp_path / f"{name}.txt").read_bytes()))
    assert outs[0] == outs[1]
    assert unsharded(tmp_path / "e.index.json", tmp_path) == (tmp_path / "e.safetensors").read_bytes()
