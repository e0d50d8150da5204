"""Golden fixture for ``embtool train-step``: torch trajectories of nn.Embedding (with max_norm)
+ torch.optim, kept at step 3 and step 100.

Run ``python tests/golden/make_train_cli.py`` with torch==2.13.0 (CPU) installed; it rewrites
``tests/golden/train_cli.npz``.  The batches come from ``make_train.make_batches`` (numpy's PCG64,
so the tests regenerate them); the file keeps each case's initial weight and torch's weight,
optimizer state and step counter at the snapshot steps.  ``torch_trajectory`` is also the live
oracle of tests/test_cli_train.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from make_train import STATE_KEYS, TORCH_CLASS, make_batches  # noqa: E402

OUT = Path(__file__).with_name("train_cli.npz")
NUM_EMBEDDINGS, DIM, STEPS, SHAPE = 50, 8, 100, (3, 4)
SNAPSHOTS = (3, STEPS)

#: (case, optimizer, hyper-parameters, nn.Embedding options as torch takes them).  Every
#: optimizer; sparse and dense tables; padding (also negative), max_norm, scale_grad_by_freq.
CASES = [
    ("sgd_sparse", "sgd", dict(lr=0.1, maximize=True), dict(sparse=True, padding_idx=3)),
    ("sgd_momentum_dense", "sgd", dict(lr=0.05, momentum=0.9, nesterov=True),
     dict(padding_idx=0, scale_grad_by_freq=True, max_norm=2.0)),
    ("adagrad_sparse", "adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1),
     dict(sparse=True, padding_idx=-1)),
    ("sparse_adam", "sparse-adam", dict(lr=0.01, betas=(0.8, 0.99)),
     dict(sparse=True, padding_idx=7, max_norm=2.5)),
    ("adam_dense", "adam", dict(lr=0.01, weight_decay=0.01, amsgrad=True), dict(padding_idx=5)),
    ("adamw_dense", "adamw", dict(lr=0.01, betas=(0.7, 0.9)),
     dict(scale_grad_by_freq=True, max_norm=3.0, norm_type=1.0)),
]


def case_weight(i: int) -> np.ndarray:
    return np.random.default_rng(300 + i).standard_normal((NUM_EMBEDDINGS, DIM)).astype(np.float32)


def case_batches(i: int, opts: dict):
    # ``hot`` rows only: many repeated indices within and across steps
    return make_batches(400 + i, NUM_EMBEDDINGS, DIM, STEPS, SHAPE, padding_idx=opts.get("padding_idx"),
                        hot=20)


def torch_trajectory(torch, name, hparams, weight0, batches, snapshots=SNAPSHOTS, **emb_options):
    """``{step: {"weight", "optim.<key>", "step"}}`` of ``nn.Embedding(**emb_options)`` trained
    with ``torch.optim`` over ``batches`` (the forward pass renorms with max_norm)."""
    v, d = weight0.shape
    emb = torch.nn.Embedding(v, d, _weight=torch.tensor(weight0), **emb_options)
    kwargs = {k: tuple(v) if k == "betas" else v for k, v in hparams.items()}
    opt = getattr(torch.optim, TORCH_CLASS[name])(emb.parameters(), **kwargs)
    out = {}
    for s, (idx, grad) in enumerate(batches, 1):
        opt.zero_grad()
        emb(torch.from_numpy(idx)).backward(torch.from_numpy(grad))
        opt.step()
        if s in snapshots:
            st = opt.state[emb.weight]
            snap = {"weight": emb.weight.detach().numpy().copy()}
            for key in STATE_KEYS:
                t = st.get(key)
                if t is not None:
                    snap[f"optim.{key}"] = (t.to_dense() if t.is_sparse else t).numpy().copy()
            count = st.get("step", s)
            snap["step"] = int(count.item() if hasattr(count, "item") else count)
            out[s] = snap
    return out


def main() -> int:
    import torch

    arrays, meta = {}, []
    for i, (case, name, hparams, opts) in enumerate(CASES):
        traj = torch_trajectory(torch, name, hparams, case_weight(i), case_batches(i, opts), **opts)
        steps = {}
        for s, snap in traj.items():
            steps[s] = snap.pop("step")
            arrays.update({f"{case}/{s}/{key}": arr for key, arr in snap.items()})
        meta.append(dict(case=case, steps=steps))
    arrays["meta"] = np.frombuffer(json.dumps(dict(torch=torch.__version__, cases=meta)).encode(), np.uint8)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({len(CASES)} cases, torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
