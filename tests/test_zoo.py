"""Model loading: checkpoints in every supported format, the cache, offline errors."""

from __future__ import annotations

import json

import pytest
import torch
from open_clip.transformer import QuickGELU

from geoalign_core import load_model, save_model, zoo
from geoalign_core.errors import CheckpointError, ModelError, OfflineError


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return tiny_model


def _outputs(m):
    g = torch.Generator().manual_seed(3)
    x = m.preprocess(torch.rand(1, 3, m.image_size, m.image_size, generator=g))
    with torch.no_grad():
        return (
            m.encode_image(x),
            m.encode_text(["a red car", "a tennis court"]),
            m.encode_regions(x, [torch.tensor([[5.0, 5.0, 60.0, 40.0]])]),
        )


def _same(a, b, atol=1e-6):
    return all(torch.allclose(x, y, atol=atol) for x, y in zip(a, b))


def test_safetensors_round_trip(tiny, tmp_path):
    path = save_model(tiny, tmp_path / "m.safetensors")
    again = load_model(path, device="cpu")
    assert again.spec.arch == "GeoAlign-Tiny"
    assert _same(_outputs(tiny), _outputs(again))


def test_a_checkpoint_loads_without_drawing_random_weights(tiny, tmp_path, monkeypatch):
    path = save_model(tiny, tmp_path / "m.safetensors")
    drawn = []
    real = torch.nn.init.normal_

    def spy(t, *a, **k):
        drawn.append(tuple(t.shape))
        return real(t, *a, **k)

    monkeypatch.setattr(torch.nn.init, "normal_", spy)
    again = load_model(path, device="cpu")
    assert not drawn  # every weight comes from the file: none was drawn first
    assert torch.nn.init.normal_ is not real  # the initialisers are back as they were (here: the spy)
    assert all(torch.equal(a, b) for a, b in zip(tiny.clip.state_dict().values(), again.clip.state_dict().values()))
    assert torch.equal(_outputs(tiny)[1], _outputs(again)[1])
    with pytest.warns(UserWarning, match="RANDOM"):
        load_model("GeoAlign-Tiny", device="cpu")  # no weights: drawn at random, as before
    assert drawn


def test_half_precision_export_is_close(tiny, tmp_path):
    path = save_model(tiny, tmp_path / "m16.safetensors", half=True)
    again = load_model(path, device="cpu")
    assert _same(_outputs(tiny), _outputs(again), atol=5e-3)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "state_dict+module"])
def test_open_clip_pt_formats(tiny, tmp_path, wrap):
    """RemoteCLIP/GeoRSCLIP/SkyCLIP/FarSLIP releases: open_clip state_dicts, maybe wrapped."""
    sd = tiny.clip.state_dict()
    if "module" in wrap:
        sd = {f"module.{k}": v for k, v in sd.items()}
    obj = {"state_dict": sd, "epoch": 3} if "state_dict" in wrap else sd
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    # the architecture is recognised from the tensor shapes
    again = load_model(path, device="cpu")
    assert again.spec.arch == "GeoAlign-Tiny"
    assert _same(_outputs(tiny), _outputs(again))
    # and can be given explicitly
    assert _same(_outputs(tiny), _outputs(load_model(path, device="cpu", arch="GeoAlign-Tiny")))


def test_pickled_objects_are_refused(tmp_path):
    import argparse

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": argparse.Namespace(a=1)}}, path)
    with pytest.raises(CheckpointError, match="is not a safe checkpoint"):
        load_model(path, device="cpu")


def test_wrong_architecture_is_a_clear_error(tiny, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.clip.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit architecture ViT-B-32"):
        load_model(path, device="cpu", arch="ViT-B-32")


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.safetensors", device="cpu")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(bad, device="cpu")
    with pytest.raises(ModelError, match="unknown model"):
        load_model("no-such-model", device="cpu")


def test_quick_gelu_flag(tmp_path, tiny):
    path = tmp_path / "t.pt"
    torch.save(tiny.clip.state_dict(), path)
    m = load_model(path, device="cpu", quick_gelu=True)
    assert isinstance(m.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert not isinstance(tiny.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)


def test_long_text_checkpoint_round_trip(tmp_path):
    m = load_model("GeoAlign-Tiny", device="cpu", long_text=True)
    path = tmp_path / "long.pt"
    torch.save({"state_dict": m.clip.state_dict()}, path)
    again = load_model(path, device="cpu")  # 248 positions are detected from the weights
    assert again.context_length == 248
    assert _same(_outputs(m), _outputs(again))


def test_zoo_entries_are_complete():
    for name in ("geoalign-demo", "openai-vit-b-16", "openai-vit-l-14", "remoteclip-vit-b-32",
                 "remoteclip-vit-l-14", "georsclip-vit-b-32", "skyclip-vit-l-14", "farslip-vit-b-16"):
        e = zoo.ZOO[name]
        assert e.arch and e.filename
        assert name == "geoalign-demo" or e.repo
    assert zoo.ZOO["openai-vit-b-16"].quick_gelu and zoo.ZOO["farslip-vit-b-16"].long_text


def test_cached_file_is_used_without_network(tiny, tmp_path, monkeypatch):
    """A file put in the cache by hand is found; the hub is never contacted."""
    monkeypatch.setenv("GEOALIGN_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entry = zoo.ZOO["remoteclip-vit-b-32"]
    target = tmp_path / entry.name / entry.filename
    target.parent.mkdir(parents=True)
    # a tiny checkpoint in the release format stands in for the real file
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny.clip.state_dict().items()}}, target)
    assert zoo.is_available(entry.name)
    assert zoo.download(entry.name) == target
    m = load_model(entry.name, device="cpu", arch="GeoAlign-Tiny")
    assert m.name == entry.name and m.dense_mode == "value"
    assert _same(_outputs(tiny)[:2], _outputs(m)[:2])


def test_offline_error_is_fast_and_helpful(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALIGN_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    probes = []

    def no_network(address, timeout=None, *args, **kwargs):
        probes.append((address, timeout))
        raise OSError("network unreachable")

    monkeypatch.setattr(zoo.socket, "create_connection", no_network)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: probes.append(("download", None)))
    with pytest.raises(OfflineError) as info:
        load_model("openai-vit-b-16", device="cpu")
    # fast: one connection attempt, bounded by the zoo's timeout, and no download tried after it
    assert len(probes) == 1 and 0 < probes[0][1] <= zoo.HUB_TIMEOUT_S <= 5
    msg = str(info.value)
    assert "openai-vit-b-16" in msg and str(tmp_path) in msg and "by hand" in msg
    assert "\n" not in msg


def test_hf_hub_from_local_cache(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALIGN_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tmp_path / "hf-hub" / "someone--tiny-rs-clip"
    d.mkdir(parents=True)
    import open_clip

    cfg = open_clip.get_model_config("GeoAlign-Tiny")
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny.clip.state_dict().items()}, str(d / "open_clip_model.safetensors"))
    m = load_model("hf-hub:someone/tiny-rs-clip", device="cpu")
    assert _same(_outputs(tiny), _outputs(m))


@pytest.mark.parametrize("repo", ["..", "", ".", "org/..", "../x", "/etc", "org/repo/extra", "org--x", "a/b/../.."])
def test_hf_hub_cache_path_never_leaves_the_hub_cache(tiny, textured, tmp_path, monkeypatch, capsys, repo):
    """``hf-hub:..`` resolved to <cache>/hf-hub/.. (the GeoAlign cache itself, one level outside the
    hub cache) and read a model from there; ids that are not a Hugging Face repository are refused,
    offline, before any file is looked for, in one line from the CLI."""
    from cli_helpers import assert_bad

    monkeypatch.setenv("GEOALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import open_clip
    from safetensors.torch import save_file

    outside = tmp_path / "cache"  # what hf-hub:.. used to read: a model planted one level up
    outside.mkdir()
    cfg = {"model_cfg": open_clip.get_model_config("GeoAlign-Tiny")}
    (outside / "open_clip_config.json").write_text(json.dumps(cfg))
    weights = {k: v.contiguous() for k, v in tiny.clip.state_dict().items()}
    save_file(weights, str(outside / "open_clip_model.safetensors"))
    with pytest.raises(ModelError, match="does not name a Hugging Face repository"):
        load_model(f"hf-hub:{repo}", device="cpu")
    with pytest.raises(ModelError, match="does not name a Hugging Face repository"):
        zoo.hf_hub_cache_dir(repo)
    work = tmp_path / "work"
    work.mkdir()
    assert_bad(capsys, ["find", str(textured), "car", "--model", f"hf-hub:{repo}", "--out",
                        str(work / "f.gpkg")], work, "does not name a Hugging Face repository")


def test_hf_hub_cache_dir_is_one_folder_inside_the_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOALIGN_CACHE", str(tmp_path))
    for repo in ("someone/tiny-rs-clip", "org/model.v1_2", "single"):
        d = zoo.hf_hub_cache_dir(repo)
        assert d.parent == tmp_path / "hf-hub" and d.resolve().parent == (tmp_path / "hf-hub").resolve()


def test_unknown_device():
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no CUDA"):
            zoo.resolve_device("cuda")
