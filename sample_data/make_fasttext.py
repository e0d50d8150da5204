"""How sample_data/small.fasttext.bin and tests/golden/fasttext.npz were made (kept for
provenance; the tests read the committed files and need neither gensim nor this script).

A small fastText model in Facebook's native .bin format, trained with gensim 4.4 on gensim's
test corpus lee_background.cor (the Lee news corpus shipped with gensim), saved with
``gensim.models.fasttext.save_facebook_model``.  The golden file holds gensim's vectors
(``load_facebook_vectors(path)[word]``) for words of the vocabulary and for unknown words (subword
vectors), and ``most_similar`` of unknown words.

    python sample_data/make_fasttext.py   (needs gensim)
"""
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent
GOLDEN = OUT.parent / "tests" / "golden" / "fasttext.npz"
CANDIDATES = ["australiaa", "cricketers", "über", "日本", "x", "qqqq", "Sydney-based", "firefighting",
              "peacekeepers", "<s>", "policeman's", "governmentally", "", "bushfires", "palestinians"]


def main():
    import gensim
    from gensim.models import FastText
    from gensim.models.fasttext import load_facebook_vectors, save_facebook_model
    from gensim.utils import simple_preprocess

    corpus = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
    sentences = [simple_preprocess(line) for line in corpus.read_text().splitlines()]
    model = FastText(sentences, vector_size=8, window=5, min_count=5, bucket=1000, min_n=3,
                     max_n=5, epochs=5, seed=1, workers=1)
    path = OUT / "small.fasttext.bin"
    save_facebook_model(model, str(path))
    kv = load_facebook_vectors(str(path))
    known = kv.index_to_key[::max(1, len(kv) // 20)][:20]
    unknown = [w for w in CANDIDATES if w not in kv.key_to_index]
    words = known + unknown
    similar = [kv.most_similar(w, topn=5) for w in unknown[:4]]
    np.savez_compressed(
        GOLDEN, words=np.array(words), vectors=np.stack([kv[w] for w in words]),
        all_words=np.array(kv.index_to_key), all_vectors=kv.vectors,
        similar_queries=np.array(unknown[:4]),
        similar_keys=np.array([[k for k, _ in s] for s in similar]),
        similar_scores=np.array([[v for _, v in s] for s in similar]))


if __name__ == "__main__":
    main()
