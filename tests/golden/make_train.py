"""Golden fixtures for embtool.backward and embtool.optim, made with PyTorch (the oracle).

Run ``python tests/golden/make_train.py`` with torch==2.13.0 (CPU) installed; it rewrites
``tests/golden/train_cases.npz``.  Each case is a short training run of ``nn.Embedding`` + a
torch.optim optimizer over fixed random batches (repeated indices and padding); the file keeps
the inputs and, after every step, torch's weight and optimizer state.  The helpers here are also
used by the tests for live comparisons.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("train_cases.npz")

#: torch optimizer class names for embtool's optimizer names.
TORCH_CLASS = {"sgd": "SGD", "adagrad": "Adagrad", "sparse-adam": "SparseAdam", "adam": "Adam", "adamw": "AdamW"}
#: torch state keys kept by each optimizer, as stored by embtool (``optim.<key>``).
STATE_KEYS = ("momentum_buffer", "sum", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def make_batches(seed, num_embeddings, dim, steps, shape, padding_idx=None, pad_rate=0.2, hot=None):
    """Random (indices, grad) batches with many repeated indices and some padding positions.
    ``hot`` restricts indices to that many rows so that duplicates are frequent."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        idx = rng.integers(0, hot or num_embeddings, size=shape)
        if padding_idx is not None:
            pad = padding_idx % num_embeddings
            idx = np.where(rng.random(shape) < pad_rate, pad, idx)
        grad = rng.standard_normal(shape + (dim,)).astype(np.float32)
        batches.append((idx.astype(np.int64), grad))
    return batches


def torch_run(torch, name, hparams, weight0, batches, *, padding_idx=None, sparse=False,
              scale_grad_by_freq=False):
    """Train ``nn.Embedding(_weight=weight0)`` with ``torch.optim`` over ``batches``.

    Returns one dict per step: ``weight`` and ``optim.<key>`` (dense float32 arrays) and ``step``.
    """
    v, d = weight0.shape
    emb = torch.nn.Embedding(v, d, padding_idx=padding_idx, sparse=sparse,
                             scale_grad_by_freq=scale_grad_by_freq, _weight=torch.tensor(weight0))
    kwargs = dict(hparams)
    if "betas" in kwargs:
        kwargs["betas"] = tuple(float(b) for b in kwargs["betas"])
    opt = getattr(torch.optim, TORCH_CLASS[name])(emb.parameters(), **kwargs)
    out = []
    for idx, grad in batches:
        opt.zero_grad()
        emb(torch.from_numpy(idx)).backward(torch.from_numpy(grad))
        opt.step()
        st = opt.state[emb.weight]
        snap = {"weight": emb.weight.detach().numpy().copy()}
        for key in STATE_KEYS:
            if key in st and st[key] is not None:
                t = st[key]
                snap[f"optim.{key}"] = (t.to_dense() if t.is_sparse else t).numpy().copy()
        step = st.get("step", len(out) + 1)
        snap["step"] = int(step.item() if hasattr(step, "item") else step)
        out.append(snap)
    return out


#: (case name, optimizer, hyper-parameters, table options) kept in the golden file.
CASES = [
    ("sgd_dense", "sgd", dict(lr=0.1), dict(padding_idx=3)),
    ("sgd_sparse", "sgd", dict(lr=0.1, maximize=True), dict(padding_idx=-1, sparse=True)),
    ("sgd_momentum_dense", "sgd", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
     dict(padding_idx=0, scale_grad_by_freq=True)),
    ("sgd_nesterov_dense", "sgd", dict(lr=0.05, momentum=0.8, nesterov=True), dict(padding_idx=2)),
    ("sgd_momentum_sparse", "sgd", dict(lr=0.05, momentum=0.9, nesterov=True), dict(sparse=True, padding_idx=1)),
    ("adagrad_dense", "adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.01,
                                       initial_accumulator_value=0.1), dict(padding_idx=3)),
    ("adagrad_sparse", "adagrad", dict(lr=0.1, lr_decay=0.01, maximize=True), dict(sparse=True, padding_idx=0)),
    ("sparse_adam", "sparse-adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), dict(sparse=True, padding_idx=4)),
    ("adam_dense", "adam", dict(lr=0.01, weight_decay=0.01, amsgrad=True), dict(padding_idx=3)),
    ("adamw_dense", "adamw", dict(lr=0.01, betas=(0.7, 0.9), maximize=True), dict(scale_grad_by_freq=True)),
]
NUM_EMBEDDINGS, DIM, STEPS, SHAPE = 24, 6, 3, (4, 5)


def case_batches(i, opts):
    return make_batches(100 + i, NUM_EMBEDDINGS, DIM, STEPS, SHAPE, padding_idx=opts.get("padding_idx"), hot=12)


def case_weight(i):
    return np.random.default_rng(200 + i).standard_normal((NUM_EMBEDDINGS, DIM)).astype(np.float32)


def main() -> int:
    import torch

    arrays = {}
    meta = []
    for i, (case, name, hparams, opts) in enumerate(CASES):
        batches = case_batches(i, opts)
        traj = torch_run(torch, name, hparams, case_weight(i), batches, **opts)
        for s, snap in enumerate(traj):
            for key, arr in snap.items():
                if key != "step":
                    arrays[f"{case}/{s}/{key}"] = arr
        meta.append(dict(case=case, name=name, hparams=hparams, opts=opts,
                         steps=[snap["step"] for snap in traj]))
    # Backward cases: dense (plain and scaled) and sparse gradients of one batch.
    idx, grad = make_batches(7, NUM_EMBEDDINGS, DIM, 1, (6, 7), padding_idx=5, hot=9)[0]
    arrays["backward/indices"], arrays["backward/grad"] = idx, grad
    for sgf in (False, True):
        w = torch.zeros(NUM_EMBEDDINGS, DIM, requires_grad=True)
        torch.nn.functional.embedding(torch.from_numpy(idx), w, padding_idx=5,
                                      scale_grad_by_freq=sgf).backward(torch.from_numpy(grad))
        arrays[f"backward/dense_sgf{int(sgf)}"] = w.grad.numpy().copy()
    w = torch.zeros(NUM_EMBEDDINGS, DIM, requires_grad=True)
    torch.nn.functional.embedding(torch.from_numpy(idx), w, padding_idx=5, sparse=True).backward(
        torch.from_numpy(grad))
    arrays["backward/sparse_rows"] = w.grad._indices().numpy()[0].copy()
    arrays["backward/sparse_values"] = w.grad._values().numpy().copy()
    arrays["meta"] = np.frombuffer(json.dumps(dict(torch=torch.__version__, cases=meta)).encode(), np.uint8)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({len(CASES)} optimizer cases, torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
