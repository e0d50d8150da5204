"""Table statistics for ``info --stats``, computed in one streamed pass over the rows.

* Row norms: float32 L2 norms as gensim computes them (``np.linalg.norm(rows, axis=1)``),
  recomputed in float64 for finite rows whose float32 norm overflows; non-finite rows are left
  out of the summary and histogram.  Quantiles use numpy's default (linear) interpolation.
* Zero rows: every element is 0.  Non-finite rows: some element is inf or NaN.
* Duplicate rows: rows whose elements are bit-identical to an earlier row's, -0.0 counting as
  0.0 (so two NaN rows with the same bits are duplicates).  Rows are hashed while streaming and
  candidate pairs are compared exactly afterwards.
* Nearest neighbours: for ``sample`` rows spread evenly over the table (moving forward past
  zero and non-finite rows), the ``NEIGHBOURS`` best rows by cosine similarity as
  ``most_similar`` ranks them (the scores come from a matrix product and may differ from
  ``most_similar``'s in the last bits); neighbours with a non-finite score are left out.
"""
from __future__ import annotations

import numpy as np

from embtool.errors import EmbtoolError, ShapeError
from embtool.sharded import merge_best
from embtool.similar import as_f32, decode, search, unit_query

NEIGHBOURS = 5
EXAMPLES = 5
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: elements hashed at once (bounds the uint64 scratch array).
_HASH_BLOCK = 1 << 21


class Scan:
    """Per-chunk observer: norms, zero / non-finite rows and row hashes, of rows ``first`` to
    ``last - 1`` (the whole table by default; a part of it in a task of a sharded table, whose
    ``partial()`` results ``merge`` puts together)."""

    def __init__(self, weight, first=0, last=None):
        self.weight = weight
        n, dim = weight.shape
        self.first = first
        last = n if last is None else last
        self.norms = np.empty(last - first, np.float64)
        self.hashes = np.empty(last - first, np.uint64)
        self.zero, self.nonfinite = [], []
        rng = np.random.default_rng(0x5EED)
        self.add = rng.integers(0, 2**63, dim, dtype=np.uint64)
        self.mul = rng.integers(0, 2**63, dim, dtype=np.uint64) | np.uint64(1)

    def partial(self) -> dict:
        """What a task sends back: per-row norms and hashes, zero and non-finite rows."""
        return {"norms": self.norms, "hashes": self.hashes, "zero": self.zero, "nonfinite": self.nonfinite}

    @classmethod
    def merge(cls, weight, partials) -> "Scan":
        """The scan of the whole table from the partials of consecutive parts, in row order."""
        scan = cls(weight, 0, 0)
        scan.norms = np.concatenate([p["norms"] for p in partials] + [scan.norms])
        scan.hashes = np.concatenate([p["hashes"] for p in partials] + [scan.hashes])
        scan.zero = [x for p in partials for x in p["zero"]]
        scan.nonfinite = [x for p in partials for x in p["nonfinite"]]
        return scan

    def __call__(self, lo, rows, norms):
        hi = lo + len(rows)
        at = lo - self.first
        norms = norms.astype(np.float64)
        raw = self.weight[lo:hi]
        odd = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
        if odd.size:
            sub = raw[odd].astype(np.float64)
            finite = np.isfinite(sub).all(axis=1)
            self.nonfinite.append(lo + odd[~finite])
            self.zero.append(lo + odd[(sub == 0).all(axis=1)])
            norms[odd[finite]] = np.linalg.norm(sub[finite], axis=1)
            norms[odd[~finite]] = np.nan
        self.norms[at:at + len(rows)] = norms
        step = max(1, _HASH_BLOCK // max(1, raw.shape[1]))
        for a in range(0, len(raw), step):
            part = raw[a:a + step]
            self.hashes[at + a:at + a + len(part)] = self.hash(part)

    def hash(self, raw):
        """64-bit hash per row of the raw (unconverted) elements, -0.0 folded into 0.0."""
        if raw.dtype.kind == "f":
            raw = raw + raw.dtype.type(0)
        words = np.ascontiguousarray(raw).view(f"u{raw.dtype.itemsize}").astype(np.uint64)
        h = ((words ^ self.add) * self.mul).sum(axis=1, dtype=np.uint64)
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x9E3779B97F4A7C15)
        return h ^ (h >> np.uint64(29))

    def same(self, a, b):
        """Whether rows a[i] and b[i] are identical (the hash's notion of equality)."""
        x, y = self.weight[a], self.weight[b]
        if x.dtype.kind == "f":
            x, y = x + x.dtype.type(0), y + y.dtype.type(0)
        width = x.shape[1] * x.itemsize
        return (x.view(np.uint8) == y.view(np.uint8)).reshape(len(a), width).all(axis=1)


def table_stats(weight, *, bins=20, sample=5, progress=None):
    """Statistics of a (N, D) table; see the module docstring.  ``progress(n)`` gets rows done.

    Returns ``{"rows", "dim", "norms": {"min", "max", "mean", "std", "quantiles"} or None,
    "histogram": {"edges", "counts"}, "zero_rows": {"count", "examples"}, "nonfinite_rows":
    {"count", "examples"}, "duplicate_rows": {"count", "examples": [(row, earlier_row)...]},
    "neighbours": [{"row", "neighbours": [(row, score)...]}...]}``.
    """
    if weight.ndim != 2:
        raise ShapeError(f"table statistics need a 2-D table, got {weight.ndim} dimensions")
    if bins < 1:
        raise EmbtoolError(f"bins must be at least 1, got {bins}")
    n, dim = weight.shape
    sampled = _sample_rows(weight, sample) if dim else []
    queries = np.zeros((len(sampled), dim), np.float32)
    for i, row in enumerate(sampled):
        queries[i] = unit_query(weight, [(row, 1.0)])[0]
    exclude = np.array(sampled, np.int64).reshape(-1, 1)
    k = min(NEIGHBOURS, max(n - 1, 0))
    sharded = getattr(weight, "sharded_table", None)
    if sharded is not None:  # the pass runs as the sharded table's tasks
        results = sharded.scan(scan_task, queries, exclude, k, n, progress=progress)
        best = merge_best([b for b, _ in results], k, len(queries))
        scan = Scan.merge(weight, [p for _, p in results])
    else:
        scan = Scan(weight)
        best = search(weight, queries, exclude, k, n, progress=progress, observe=scan)
    zero = np.concatenate(scan.zero + [np.empty(0, np.int64)])
    nonfinite = np.concatenate(scan.nonfinite + [np.empty(0, np.int64)])
    finite = scan.norms[np.isfinite(scan.norms)]
    return {
        "rows": n,
        "dim": dim,
        "norms": _summary(finite),
        "histogram": _histogram(finite, bins),
        "zero_rows": {"count": len(zero), "examples": zero[:EXAMPLES].tolist()},
        "nonfinite_rows": {"count": len(nonfinite), "examples": nonfinite[:EXAMPLES].tolist()},
        "duplicate_rows": _duplicates(scan),
        "neighbours": [{"row": row, "neighbours": [(r, x) for r, x in decode(keys) if np.isfinite(x)]}
                       for row, keys in zip(sampled, best)],
    }


def scan_task(job):
    """A task of a sharded table's pass (``ShardedTable.scan``): the neighbour sample's best keys
    over the job's rows and the ``Scan`` partial of those rows."""
    rows = job.rows()
    scan = Scan(rows, job.start, job.stop)
    return job.search(rows, observe=scan), scan.partial()


def format_stats(stats, width=40, name=None):
    """The statistics as plain text lines for humans (``info --stats`` without ``--json``);
    ``name(row)`` (e.g. the vocabulary's word) labels the neighbour sample."""
    tag = str if name is None else name
    lines = [f"stats      {stats['rows']:,} rows x {stats['dim']}"]
    norms = stats["norms"]
    if norms is None:
        lines.append("norms      no finite rows")
    else:
        q = norms["quantiles"]
        lines.append(f"norms      min {norms['min']:.6g}  max {norms['max']:.6g}  "
                     f"mean {norms['mean']:.6g}  std {norms['std']:.6g}")
        lines.append("quantiles  " + "  ".join(f"{k} {v:.6g}" for k, v in q.items()))
        hist = stats["histogram"]
        top = max(hist["counts"]) or 1
        lines.append("histogram")
        for lo, hi, count in zip(hist["edges"], hist["edges"][1:], hist["counts"]):
            bar = "#" * round(width * count / top)
            lines.append(f"  {lo:>12.6g} .. {hi:<12.6g} {count:>10,} {bar}".rstrip())
    for key, label in (("zero_rows", "zero rows"), ("nonfinite_rows", "non-finite")):
        part = stats[key]
        examples = ", ".join(map(str, part["examples"]))
        lines.append(f"{label:<11}{part['count']:,}" + (f" (rows {examples}, ...)" if examples else ""))
    dup = stats["duplicate_rows"]
    examples = ", ".join(f"{r}={e}" for r, e in dup["examples"])
    lines.append(f"duplicates {dup['count']:,}" + (f" (row=earlier row: {examples}, ...)" if examples else ""))
    if stats["neighbours"]:
        lines.append("neighbours")
        for item in stats["neighbours"]:
            near = ", ".join(f"{tag(r)} ({x:.4f})" for r, x in item["neighbours"])
            word = "" if name is None else f" {tag(item['row'])}"
            lines.append(f"  row {item['row']}{word}: {near}")
    return "\n".join(lines)


def _sample_rows(weight, sample):
    """Up to ``sample`` distinct rows spread evenly, each moved forward past unusable rows."""
    n = weight.shape[0]
    picked = []
    for start in np.linspace(0, n, max(0, sample), endpoint=False).astype(np.int64):
        row = int(start)
        while row < n and (row in picked or not _usable(weight[row])):
            row += 1
            if row - start > 1000:  # a long run of zero rows: give up on this sample
                row = n
        if row < n:
            picked.append(row)
    return picked


def _usable(row):
    row = as_f32(np.asarray(row))
    norm = np.sqrt(np.add.reduce(row * row))
    return bool(np.isfinite(norm) and norm > 0)


def _summary(norms):
    if not norms.size:
        return None
    return {"min": float(norms.min()), "max": float(norms.max()), "mean": float(norms.mean()),
            "std": float(norms.std()),
            "quantiles": {f"p{round(q * 100)}": float(v)
                          for q, v in zip(QUANTILES, np.quantile(norms, QUANTILES))}}


def _histogram(norms, bins):
    if not norms.size:
        return {"edges": [], "counts": []}
    lo, hi = float(norms.min()), float(norms.max())
    counts, edges = np.histogram(norms, bins=bins, range=(lo, hi if hi > lo else lo + 1.0))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _duplicates(scan, block=1 << 16):
    """Rows identical to an earlier row: count and the first examples (row, earlier row)."""
    order = np.argsort(scan.hashes, kind="stable")  # equal hashes: ascending row ids
    h = scan.hashes[order]
    same_hash = np.flatnonzero(h[1:] == h[:-1]) + 1  # positions in `order` repeating a hash
    group_start = np.maximum.accumulate(np.where(np.r_[True, h[1:] != h[:-1]],
                                                 np.arange(len(h)), 0))
    found, collided = [], []
    for a in range(0, len(same_hash), block):
        pos = same_hash[a:a + block]
        rows, firsts = order[pos], order[group_start[pos]]
        eq = scan.same(rows, firsts)
        found.append(np.stack([rows[eq], firsts[eq]], axis=1))
        collided.extend(pos[~eq].tolist())
    pairs = np.concatenate(found + [np.empty((0, 2), np.int64)])
    if collided:  # a hash collision: compare those rows with every earlier row of their group
        extra = []
        for p in collided:
            row = order[p]
            for q in range(group_start[p], p):
                if scan.same(order[q:q + 1], order[p:p + 1])[0]:
                    extra.append((row, order[q]))
                    break
        pairs = np.concatenate([pairs, np.array(extra, np.int64).reshape(-1, 2)])
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    return {"count": len(pairs),
            "examples": [(int(r), int(e)) for r, e in pairs[:EXAMPLES]]}
