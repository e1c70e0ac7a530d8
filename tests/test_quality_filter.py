"""The data-quality filter: ``prepare --quality-filter NAME --keep F`` keeps the best-scored share of the
training samples (a pluggable scorer; clip-score = image-caption cosine under a reference model)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cli_helpers import assert_bad, cli

from geoalign_core import load_model
from geoalign_core.data import quality
from geoalign_core.data.schema import read_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _lines(path):
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_a_registered_scorer_keeps_the_best_share(scene_1002, tmp_path, capsys):
    """Any scorer plugs in by name; the kept samples are the top ceil(keep x n) by its scores, in
    their original order; quality.jsonl and dataset.json say what was done; samples_val is left alone."""
    tif, gpkg = scene_1002
    out = tmp_path / "d"
    rc, _, err = cli(capsys, "prepare", tif, gpkg, "--class-field", "class", "--out", out, "--val-fraction", "0.3",
                     "--quiet")
    assert rc == 0, err
    before = _lines(out / "samples.jsonl")
    val_before = (out / "samples_val.jsonl").read_text()
    n = len(before)
    assert n >= 5

    @quality.register_scorer("by-name-length")
    class ByName:  # a stand-in for a learned score model: deterministic, known scores
        name = "by-name-length"

        def __init__(self, model=None, device="auto", batch_size=32):
            self.model_name = model

        def score(self, samples, root):
            assert all((root / s["image"]).is_file() for s in samples)
            return np.array([int(s["image"][-8:-4]) % 7 + 0.001 * i for i, s in enumerate(samples)])

    try:
        got = quality.filter_dataset(out, quality.make_scorer("by-name-length"), 0.4)
    finally:
        quality.SCORERS.pop("by-name-length")
    scores = ByName().score(before, out)
    k = math.ceil(0.4 * n)
    best = set(np.argsort(-scores, kind="stable")[:k].tolist())
    after = _lines(out / "samples.jsonl")
    assert after == [s for i, s in enumerate(before) if i in best]  # the best, in their original order
    assert got.n_before == n and got.n_after == k and got.threshold == pytest.approx(min(scores[list(best)]))
    q = _lines(out / "quality.jsonl")
    assert [r["image"] for r in q] == [s["image"] for s in before]
    assert [r["kept"] for r in q] == [i in best for i in range(n)]
    meta = json.loads((out / "dataset.json").read_text())["quality_filter"]
    assert meta["scorer"] == "by-name-length" and meta["n_after"] == k and meta["keep"] == 0.4
    assert (out / "samples_val.jsonl").read_text() == val_before
    with pytest.raises(Exception, match="keep must be in"):
        quality.filter_dataset(out, ByName(), 0.0)


@pytest.mark.slow
def test_clip_score_through_the_cli(scene_1002, tiny_ckpt, tmp_path, capsys):
    """clip-score ranks by cos(image, brief caption) under --quality-model: recomputed here, the kept
    samples are exactly the best half; bad inputs are one line, exit 2, nothing written."""
    tif, gpkg = scene_1002
    out = tmp_path / "d"
    rc, stdout, err = cli(capsys, "prepare", tif, gpkg, "--class-field", "class", "--out", out,
                          "--quality-filter", "clip-score", "--keep", "0.5", "--quality-model", tiny_ckpt, "--quiet")
    assert rc == 0, err
    q = _lines(out / "quality.jsonl")
    n = len(q)
    assert f"quality filter clip-score: kept {math.ceil(n / 2)} of {n} training samples" in stdout
    model = load_model(tiny_ckpt, device="cpu").eval()
    kept_samples = _lines(out / "samples.jsonl")
    score_of = {r["image"]: r["score"] for r in q}
    with torch.no_grad():  # a kept sample's score is the cosine of its image and its brief caption
        for s in kept_samples:
            img = torch.from_numpy(read_image(out / s["image"]))[None]
            e, t = model.encode_image(model.preprocess(img)), model.encode_text([s["caption"]])
            assert float((e * t).sum()) == pytest.approx(score_of[s["image"]], abs=1e-4)
    kept = [r["score"] for r in q if r["kept"]]
    dropped = [r["score"] for r in q if not r["kept"]]
    assert len(kept) == len(kept_samples) == math.ceil(n / 2) and (not dropped or min(kept) >= max(dropped))
    assert [s["image"] for s in kept_samples] == [r["image"] for r in q if r["kept"]]
    for args, match in ((["--quality-filter", "clip-score", "--keep", "0"], "--keep must be in"),
                        (["--quality-filter", "nonsense"], "unknown quality filter"),
                        (["--quality-model", tiny_ckpt], "--quality-model needs --quality-filter")):
        assert_bad(capsys, ["prepare", tif, gpkg, "--class-field", "class", "--out", tmp_path / "bad", *args],
                   tmp_path, match)


def test_random_control_is_deterministic_and_uniform():
    """``random`` (the filter's control) scores each sample by its image path only."""
    r = quality.make_scorer("random")
    samples = [{"image": f"chips/{i:06d}.tif"} for i in range(400)]
    a, b = r.score(samples, None), r.score(list(reversed(samples)), None)
    assert np.array_equal(a, b[::-1]) and 0.4 < a.mean() < 0.6 and len(set(a.tolist())) == 400
