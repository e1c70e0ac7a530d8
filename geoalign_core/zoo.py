"""Named models, checkpoints, download + cache, and clear offline errors.

``load_model(name_or_path)`` accepts

* a zoo name (``geoalign-demo``, ``openai-vit-b-16``, ``remoteclip-vit-b-32``, ... see
  :data:`ZOO` or ``geoalign models list``);
* ``hf-hub:org/repo``: an open_clip model published on the Hugging Face hub
  (``open_clip_config.json`` + ``open_clip_model.safetensors``);
* a local ``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors`` checkpoint: a plain open_clip
  state_dict, one wrapped in ``{"state_dict": ...}``, with or without ``module.``
  prefixes (the RemoteCLIP / GeoRSCLIP / SkyCLIP / FarSLIP release format), or a
  GeoAlign export (safetensors whose metadata names its architecture). Files are read
  with ``torch.load(weights_only=True)`` only;
* an open_clip architecture name (``ViT-B-16``): random weights, with a warning.

Downloads go to ``$GEOALIGN_CACHE`` (default ``~/.cache/geoalign``) as
``<cache>/<zoo name>/<file>``: a file placed there by hand is used without any network.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import warnings
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch

from .card import load_card
from .defaults import DEFAULT_MODEL  # (also re-exported: zoo.DEFAULT_MODEL)
from .errors import CheckpointError, ModelError, OfflineError
from .model import GeoAlignCLIP, as_open_clip, build_clip
from .spec import SPEC_KEY, ModelSpec
from .text_model import remember_fingerprint

# the table and the cache paths live in a module without torch (models list, the engine's model
# list); re-exported here, where they always were
from .zoo_table import WEIGHTS_DIR, ZOO, ZooEntry, cache_dir, is_available, weights_path  # noqa: F401

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")

HUB_TIMEOUT_S = 4.0


def _hub_host() -> str:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return urlparse(endpoint).hostname or "huggingface.co"


def _hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Resolve and connect to the hub in a thread, giving up after ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((_hub_host(), 443), timeout=timeout):
                ok.append(True)
        except OSError:
            ok.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok and ok[0])


def _offline_message(what: str, repo: str, filename: str, target: Path) -> str:
    return (
        f"cannot download {what}: the model hub is unreachable and {target} does not exist; "
        f"place {filename} from hub repo {repo} there by hand (or set GEOALIGN_CACHE)"
    )


def _hub_download(repo: str, filename: str, target_dir: Path, what: str) -> Path:
    target = target_dir / filename
    if target.is_file():
        return target
    if not _hub_reachable():
        raise OfflineError(_offline_message(what, repo, filename, target))
    from huggingface_hub import hf_hub_download

    target_dir.mkdir(parents=True, exist_ok=True)
    try:
        path = hf_hub_download(repo, filename, local_dir=str(target_dir), etag_timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # network, auth, missing file: one line for the user
        raise OfflineError(f"{_offline_message(what, repo, filename, target)} ({type(exc).__name__})") from None
    return Path(path)


def download(name: str) -> Path:
    """Make a zoo model available offline; returns the weights file (with a progress bar)."""
    entry = ZOO.get(name)
    if entry is None:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    path = weights_path(entry)
    if path.is_file():
        return path
    if entry.repo is None:
        raise CheckpointError(f"bundled weights of {name} are missing from the installation: {path}")
    return _hub_download(entry.repo, entry.filename, path.parent, f"model {name!r}")


# ---------------------------------------------------------------------------- state dicts
def load_torch_file(path: str | Path) -> object:
    """``torch.load(path, weights_only=True)`` with one-line errors: a file that holds more than
    tensors (a pickled object or function: loading it could run code) is "not a safe checkpoint",
    and PyTorch's advice to load it with ``weights_only=False`` is never passed on.

    Raises:
        CheckpointError: the file is not a safe checkpoint, or cannot be read.
    """
    import pickle

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"WeightsUnpickler error: (.*?)(?: was not an allowed global| Please|\n|$)", str(exc))
        what = re.sub(r"\x1b\[[0-9;]*m", "", found.group(1)).strip().rstrip(".") if found else ""
        raise CheckpointError(
            f"{path} is not a safe checkpoint: it holds more than tensors{f' ({what[:120]})' if what else ''}, "
            "and loading it could run code; GeoAlign never loads such a file. Use a checkpoint of plain "
            "weights (a .safetensors file, or a torch file of a state_dict of tensors)") from None
    except Exception as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
        msg = text.splitlines()[0] if text else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {msg[:200]}") from None


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read weights (and safetensors metadata) from a checkpoint file, unwrapping wrappers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    meta: dict[str, str] = {}
    sd: object  # what the file holds: checked to be a state_dict below
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        else:
            sd = load_torch_file(path)
            for key in ("state_dict", "model", "module"):
                if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                    sd = sd[key]
                    break
    except CheckpointError:
        raise
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {msg[:200]}") from None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} is not a CLIP state_dict")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}, meta


def _shape_signature(cfg: dict) -> tuple | None:
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if not isinstance(v.get("layers"), int) or "timm_model_name" in v or "hf_model_name" in t:
        return None
    size = v.get("image_size", 224)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return (cfg["embed_dim"], v.get("width"), v["layers"], v.get("patch_size"), size, t.get("width"), t.get("layers"))


def _state_signature(sd: dict[str, torch.Tensor]) -> tuple | None:
    try:
        conv = sd["visual.conv1.weight"]
        width, patch = conv.shape[0], conv.shape[-1]
        grid = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
        vis_layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
        txt_layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
        embed = sd["visual.proj"].shape[1]
        twidth = sd["token_embedding.weight"].shape[1]
    except KeyError:
        return None
    return (embed, width, vis_layers, patch, grid * patch, twidth, txt_layers)


def infer_arch(sd: dict[str, torch.Tensor]) -> str | None:
    """Guess the open_clip architecture of a state_dict from its tensor shapes."""
    from . import archs  # noqa: F401

    sig = _state_signature(sd)
    if sig is None:
        return None
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name)
        if cfg and _shape_signature(cfg) == sig:
            return name
    return None


def _load_into(model: GeoAlignCLIP, sd: dict[str, torch.Tensor], source: str) -> None:
    clip = model.clip
    sd = dict(sd)
    scale = as_open_clip(clip).logit_scale
    if "logit_scale" in sd and sd["logit_scale"].ndim != scale.ndim:
        sd["logit_scale"] = sd["logit_scale"].reshape(scale.shape)
    own = clip.state_dict()
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(
                f"{source} does not fit architecture {model.spec.arch}: {k} has shape "
                f"{tuple(v.shape)}, the architecture expects {tuple(own[k].shape)}"
            )
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise CheckpointError(f"{source} does not fit architecture {model.spec.arch}: " + ", ".join(parts))
    nan = [k for k, v in sd.items() if v.is_floating_point() and bool(torch.isnan(v).any())]
    if nan:  # one NaN weight turns every embedding, and so every score, into NaN: nothing would be found
        raise CheckpointError(f"{source} holds NaN weights ({len(nan)} of its {len(sd)} tensors, e.g. {nan[0]}): "
                              "a model with them scores nothing (a training run that diverged?); use another "
                              "checkpoint")
    clip.load_state_dict(sd, strict=True)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("device cuda was asked for but no CUDA GPU is available", param="device")
    return dev


def build_model(spec: ModelSpec, state_dict: dict[str, torch.Tensor] | None = None, source: str = "") -> GeoAlignCLIP:
    """Build the network for ``spec`` and load ``state_dict`` (strict) into it (no random weights are drawn
    first: every one is loaded)."""
    clip, mean, std = build_clip(spec, init=state_dict is None)
    model = GeoAlignCLIP(clip, spec, mean, std)
    if state_dict is not None:
        _load_into(model, state_dict, source or "checkpoint")
    return model


def load_checkpoint_file(
    path: str | Path,
    arch: str | None = None,
    quick_gelu: bool | None = None,
    long_text: bool | None = None,
    dense_mode: str | None = None,
    name: str | None = None,
) -> GeoAlignCLIP:
    sd, meta = read_state_dict(path)
    if SPEC_KEY in meta:
        spec = ModelSpec.from_dict(json.loads(meta[SPEC_KEY]))
        if arch is not None and arch != spec.arch:
            raise CheckpointError(f"{path} holds a {spec.arch} model, not {arch}")
    else:
        guessed = arch or infer_arch(sd)
        if guessed is None:
            raise CheckpointError(
                f"cannot tell the architecture of {path}: pass it explicitly (e.g. arch='ViT-B-16')"
            )
        spec = ModelSpec(arch=guessed, quick_gelu=bool(quick_gelu))
    asked_long = spec.long_text if long_text is None else long_text
    pos = sd.get("positional_embedding")
    spec.resolve(path, None if pos is None else int(pos.shape[0]), quick_gelu, dense_mode, name)
    ckpt_long = spec.long_text
    want_long = ckpt_long or bool(asked_long)
    model = build_model(spec, sd, str(path))
    if want_long and not ckpt_long:
        model.enable_long_text()  # a 77-token checkpoint asked to run long: stretch (Long-CLIP)
    return model


def _umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_model(model: GeoAlignCLIP, path: str | Path, half: bool = False) -> Path:
    """Export weights + spec as ``.safetensors`` that :func:`load_model` reads back alone."""
    from safetensors.torch import save_file

    path = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.clip.state_dict().items()}
    if half:
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(sd, str(tmp), metadata={SPEC_KEY: json.dumps(model.spec.to_dict())})
    os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates 0600 files; outputs follow the umask
    os.replace(tmp, path)
    return path


# a Hugging Face repo id: [namespace/]name, each of letters, digits, '-', '_', '.', neither starting
# nor ending with '-' or '.', without '--' or '..' (the hub's own rule): never '.', '..' or empty
_HF_PART = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
_HF_REPO = re.compile(rf"(?:{_HF_PART}/)?{_HF_PART}")


def hf_hub_cache_dir(repo: str) -> Path:
    """Where the files of ``hf-hub:<repo>`` are cached: ``<cache>/hf-hub/<namespace>--<name>``,
    always one folder inside the hub cache (a repo id that is not one, such as ``..``, is refused)."""
    if not _HF_REPO.fullmatch(repo) or "--" in repo or ".." in repo or len(repo) > 96:
        raise ModelError(f"hf-hub:{repo} does not name a Hugging Face repository: give hf-hub:<namespace>/<name> "
                         "(letters, digits, '-', '_', '.'; e.g. hf-hub:org/model)", param="model")
    return cache_dir() / "hf-hub" / repo.replace("/", "--")


def _load_hf_hub(repo: str, **overrides) -> GeoAlignCLIP:
    target_dir = hf_hub_cache_dir(repo)
    cfg_path = _hub_download(repo, "open_clip_config.json", target_dir, f"hf-hub:{repo}")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"bad open_clip_config.json in {target_dir}: {exc}") from None
    model_cfg = cfg.get("model_cfg", cfg)
    arch = f"hf-hub--{repo.replace('/', '--')}"
    open_clip.factory._MODEL_CONFIGS[arch] = model_cfg
    weights = _hub_download(repo, "open_clip_model.safetensors", target_dir, f"hf-hub:{repo}")
    return load_checkpoint_file(weights, arch=arch, name=f"hf-hub:{repo}", **overrides)


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    device: str | torch.device | None = "auto",
    *,
    arch: str | None = None,
    quick_gelu: bool | None = None,
    long_text: bool | None = None,
    dense_mode: str | None = None,
) -> GeoAlignCLIP:
    """Load a GeoAlignCLIP by zoo name, ``hf-hub:`` id, checkpoint path or architecture.

    The returned model is in eval mode on ``device`` ("auto": CUDA when available).
    ``arch``/``quick_gelu``/``long_text``/``dense_mode`` override what the source implies.
    """
    dev = resolve_device(device)
    key = str(name_or_path)
    card = None
    if key in ZOO:
        entry = ZOO[key]
        path = download(key)
        q = entry.quick_gelu if quick_gelu is None else quick_gelu
        lt = entry.long_text if long_text is None else long_text
        model = load_checkpoint_file(
            path, arch=arch or entry.arch, quick_gelu=q, long_text=lt,
            dense_mode=dense_mode or entry.dense_mode, name=entry.name,
        )
        card = load_card(path)
        remember_fingerprint(path, model)
    elif key.startswith("hf-hub:"):
        model = _load_hf_hub(key[len("hf-hub:"):], quick_gelu=quick_gelu, long_text=long_text, dense_mode=dense_mode)
    elif Path(key).suffix.lower() in CHECKPOINT_SUFFIXES or Path(key).is_file():
        model = load_checkpoint_file(key, arch=arch, quick_gelu=quick_gelu, long_text=long_text, dense_mode=dense_mode)
        card = load_card(key)
        remember_fingerprint(key, model)
    else:
        from . import archs  # noqa: F401

        if key not in open_clip.list_models():
            raise ModelError(
                f"unknown model {key!r}: not a zoo name ({', '.join(ZOO)}), an hf-hub: id, "
                f"a checkpoint file, or an open_clip architecture"
            )
        warnings.warn(f"{key}: no weights given, using RANDOM initialisation", stacklevel=2)
        spec = ModelSpec(
            arch=key,
            quick_gelu=bool(quick_gelu),
            long_text=bool(long_text),
            dense_mode=dense_mode or "standard",
            name=key,
        )
        model = build_model(spec)
    model.card = card
    return model.to(dev).eval()
