"""Write tests/golden/lookup.npz: F.embedding / embedding_renorm_ results from PyTorch 2.13 (CPU).

Run with torch installed:  python tests/golden/make_lookup.py
The inputs are stored next to the outputs, so the tests need neither torch nor this script.
"""
from pathlib import Path

import numpy as np
import torch

NORM_TYPES = [2.0, 1.0, 3.0, 0.5, float("inf"), float("-inf"), 0.0, 2.5, -1.0]
DIMS = [1, 3, 4, 5, 7, 8, 9, 13, 16, 31, 64, 128, 300]


def main():
    rng = np.random.default_rng(20261122)
    out = {"torch_version": np.array(torch.__version__)}
    for d in DIMS:
        rows = 40 if d < 100 else 16
        w = (rng.standard_normal((rows, d)) * rng.choice([1e-3, 0.3, 1, 5, 40], (rows, 1))).astype(np.float32)
        w[3] = 0  # zero row
        if d > 2:
            w[5, 1] = np.inf  # inf row -> NaN after renorm
            w[6, 0] = np.nan  # NaN row: untouched
        ids = rng.integers(0, rows, (4, 5))  # repeated ids, 2-D input
        out[f"w_{d}"] = w
        out[f"ids_{d}"] = ids
        out[f"plain_{d}"] = torch.nn.functional.embedding(torch.from_numpy(ids), torch.from_numpy(w)).numpy()
        for p in NORM_TYPES:
            for max_norm in (1.0, 3.0):
                tw = torch.from_numpy(w.copy())
                y = torch.nn.functional.embedding(torch.from_numpy(ids), tw, max_norm=max_norm, norm_type=p)
                key = f"{d}_{p}_{max_norm}"
                if max_norm == 1.0:
                    out[f"out_{key}"] = y.numpy()
                out[f"weight_{key}"] = tw.numpy()
            out[f"norm_{d}_{p}"] = np.array([torch.from_numpy(r).norm(p).item() for r in w], np.float32)
    np.savez_compressed(Path(__file__).with_name("lookup.npz"), **out)


if __name__ == "__main__":
    main()
