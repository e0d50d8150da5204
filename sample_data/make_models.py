"""How the model samples were made (kept for provenance; the tests read the committed files and
need neither gensim nor this script): sample_data/small.fasttext.bin with tests/golden/fasttext.npz,
and sample_data/static-model/, a sentence-transformers StaticEmbedding folder.

static-model/: the 1,000 most frequent words of the GloVe sample (glove.6B.50d.10k.txt.gz) as a
model2vec-style static model in sentence-transformers' layout: modules.json, and
0_StaticEmbedding/ holding model.safetensors (``embedding.weight``, F16, rows for [PAD] and [UNK]
then the words) and a WordPiece tokenizer.json naming them.

A small fastText model in Facebook's native .bin format, trained with gensim 4.4 on gensim's
test corpus lee_background.cor (the Lee news corpus shipped with gensim), saved with
``gensim.models.fasttext.save_facebook_model``.  The golden file holds gensim's vectors
(``load_facebook_vectors(path)[word]``) for words of the vocabulary and for unknown words (subword
vectors), and ``most_similar`` of unknown words.

    python sample_data/make_models.py   (needs gensim)
"""
import gzip
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent
GOLDEN = OUT.parent / "tests" / "golden" / "fasttext.npz"
CANDIDATES = ["australiaa", "cricketers", "über", "日本", "x", "qqqq", "Sydney-based", "firefighting",
              "peacekeepers", "<s>", "policeman's", "governmentally", "", "bushfires", "palestinians"]


def static_model(words=1000):
    root = OUT / "static-model"
    sub = root / "0_StaticEmbedding"
    sub.mkdir(parents=True, exist_ok=True)
    rows, tokens = [], ["[PAD]", "[UNK]"]
    with gzip.open(OUT / "glove.6B.50d.10k.txt.gz", "rt", encoding="utf-8") as f:
        for line, _ in zip(f, range(words)):
            word, *values = line.split(" ")
            tokens.append(word)
            rows.append(np.array(values, np.float32))
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.standard_normal((2, 50)).astype(np.float32) * 0.01, np.stack(rows)])
    from safetensors.numpy import save_file

    save_file({"embedding.weight": emb.astype(np.float16)}, str(sub / "model.safetensors"))
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, t in enumerate(tokens[:2])],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": {t: i for i, t in enumerate(tokens)}}}
    (sub / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_StaticEmbedding",
         "type": "sentence_transformers.models.StaticEmbedding"},
        {"idx": 1, "name": "1", "path": "1_Normalize", "type": "sentence_transformers.models.Normalize"}],
        indent=2))
    (root / "config_sentence_transformers.json").write_text('{"similarity_fn_name": "cosine"}\n')


def main():
    static_model()
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
