"""The on-disk store of a model's background and vocabulary text embeddings (inference/text_store.py)."""

from __future__ import annotations

import copy

import torch

from geoalign_core.inference.encoder import Encoder
from geoalign_core.inference.text_store import store_path


def _query(model, phrases):
    enc = Encoder(model, batch_size=2)
    texts, background = enc.query_texts(phrases)
    vocab, _ = enc.vocabulary_texts(phrases, background)
    return enc, texts, vocab


def test_a_fresh_encoder_reads_the_fixed_texts_from_disk_and_gets_the_same_vectors(tiny_model, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("GEOALIGN_CACHE", str(tmp_path))
    monkeypatch.setenv("GEOALIGN_TEXT_STORE", "1")
    first, texts, vocab = _query(tiny_model, ["red car"])
    fixed = first.texts_encoded - 1  # everything but the user's phrase: background, vocabulary, colour rivals
    assert fixed > 10
    path = store_path(tiny_model.fingerprint(), "cpu")
    assert path.is_file()
    stored = torch.load(path, weights_only=True)
    assert "red car" not in stored["texts"] and len(stored["texts"]) == fixed  # never the user's phrases

    again, texts2, vocab2 = _query(tiny_model, ["red car"])
    assert again.texts_encoded == 1  # only the user's phrase went through the text tower
    assert torch.equal(texts[1:], texts2[1:]) and torch.equal(vocab, vocab2)  # the stored vectors, exactly
    # the user's phrase went through the tower alone this time: a batch of another size may differ in the last bits
    assert torch.allclose(texts[0], texts2[0], atol=1e-5)

    other = _query(tiny_model, ["swimming pool"])[0]
    assert other.texts_encoded == 1

    off = monkeypatch.context()
    with off as m:
        m.setenv("GEOALIGN_TEXT_STORE", "0")
        assert _query(tiny_model, ["red car"])[0].texts_encoded == first.texts_encoded


def test_other_weights_and_a_damaged_store_encode_again(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALIGN_CACHE", str(tmp_path))
    monkeypatch.setenv("GEOALIGN_TEXT_STORE", "1")
    n = _query(tiny_model, ["red car"])[0].texts_encoded
    # fine-tuned weights (here: one tensor changed) have another key: nothing is read from the first model's store
    tuned = copy.deepcopy(tiny_model)
    with torch.no_grad():
        next(tuned.clip.parameters()).add_(0.01)
    assert tuned.fingerprint(fresh=True) != tiny_model.fingerprint()
    assert _query(tuned, ["red car"])[0].texts_encoded == n
    # a damaged file is ignored (and replaced)
    path = store_path(tiny_model.fingerprint(), "cpu")
    path.write_bytes(b"not a torch file")
    assert _query(tiny_model, ["red car"])[0].texts_encoded == n
    assert _query(tiny_model, ["red car"])[0].texts_encoded == 1


def test_a_model_in_training_mode_uses_no_store(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALIGN_CACHE", str(tmp_path))
    monkeypatch.setenv("GEOALIGN_TEXT_STORE", "1")
    tiny_model.train()
    try:
        enc = _query(tiny_model, ["red car"])[0]
        assert enc.texts_encoded > 1 and not (tmp_path / "text-embeddings").exists()
    finally:
        tiny_model.eval()
