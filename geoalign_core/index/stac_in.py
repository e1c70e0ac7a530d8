"""Scenes from STAC: the items of a STAC file (ItemCollection, Catalog, Collection or one Item, read
with pystac) or of a STAC API search (pystac-client), each a collection scene.

An item becomes a :class:`~.scenes.Scene` named by its ``id`` (made file-system safe where it is
not), whose raster is the item's chosen asset: a local file, or a COG read remotely through GDAL
(``/vsicurl/`` for http(s), ``/vsis3/`` for s3, ``/vsigs/`` for gs). The item's self href and links
travel with the scene into the collection's manifest, and the STAC description of the index
(:mod:`.stac_out`) links back to them (``rel: emb:source-data``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import InputError
from .scenes import Scene

__all__ = ["DEFAULT_ASSETS", "asset_raster", "is_api", "parse_bbox", "stac_scenes"]

#: the asset used when --asset is not given: the first of these an item has ...
DEFAULT_ASSETS = ("visual", "image", "data", "rgb")
#: ... else the item's only GeoTIFF asset
_TIFF = ("image/tiff", "image/geotiff", "image/tiff; application=geotiff")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_api(source: str) -> bool:
    """Whether ``--stac SOURCE`` names a STAC API (an http(s) URL that is not a .json file)."""
    return source.startswith(("http://", "https://")) and not urlparse(source).path.lower().endswith(".json")


def parse_bbox(text: str | None) -> list[float] | None:
    """``"minx,miny,maxx,maxy"`` (WGS84 degrees) -> four floats."""
    if text is None:
        return None
    try:
        vals = [float(v) for v in str(text).split(",")]
    except ValueError:
        vals = []
    if len(vals) != 4 or not (vals[0] <= vals[2] and vals[1] <= vals[3]):
        raise InputError(f"--bbox must be minx,miny,maxx,maxy in degrees with min <= max; got {text!r}",
                         param="bbox")
    return vals


def asset_raster(href: str) -> str:
    """What GDAL opens for an asset href: a local path, or a /vsi path for a remote COG."""
    if href.startswith("/vsi"):
        return href
    scheme = urlparse(href).scheme.lower()
    if scheme in ("http", "https"):
        return f"/vsicurl/{href}"
    if scheme == "s3":
        return f"/vsis3/{href[5:]}"
    if scheme in ("gs", "gcs"):
        return f"/vsigs/{href.split('://', 1)[1]}"
    if scheme == "file":
        return unquote(urlparse(href).path)
    if scheme and len(scheme) > 1:
        raise InputError(f"cannot read an asset at {href}: {scheme}:// is not a scheme GDAL reads here",
                         param="stac")
    return str(Path(href).resolve())


def _pick_asset(item, key: str | None) -> tuple[str, str]:
    assets = item.assets
    if key is not None:
        if key not in assets:
            raise InputError(f"STAC item {item.id!r} has no asset {key!r} (it has: {', '.join(sorted(assets))})",
                             param="asset")
        return key, assets[key].get_absolute_href() or assets[key].href
    for k in DEFAULT_ASSETS:
        if k in assets:
            return k, assets[k].get_absolute_href() or assets[k].href
    tiffs = [k for k, a in assets.items() if (a.media_type or "").lower() in _TIFF]
    if len(tiffs) == 1:
        return tiffs[0], assets[tiffs[0]].get_absolute_href() or assets[tiffs[0]].href
    raise InputError(f"STAC item {item.id!r}: choose its image asset with --asset (it has: "
                     f"{', '.join(sorted(assets)) or 'no assets'})", param="asset")


def _read_file_items(source: str) -> list:
    import pystac

    try:
        obj = pystac.read_file(source)
    except FileNotFoundError:
        raise InputError(f"no STAC file {source}", param="stac") from None
    except Exception as exc:  # noqa: BLE001 -- JSON, STAC or I/O: one line for the user
        # an ItemCollection is not a STAC object pystac.read_file knows
        try:
            return list(pystac.ItemCollection.from_file(source))
        except Exception:  # noqa: BLE001
            raise InputError(f"not a STAC file {source}: {type(exc).__name__}: {exc}", param="stac") from None
    if isinstance(obj, pystac.Item):
        return [obj]
    if isinstance(obj, pystac.Catalog):  # a Collection is a Catalog
        return list(obj.get_items(recursive=True))
    raise InputError(f"{source} is a STAC {type(obj).__name__}; give an ItemCollection, Catalog, Collection or "
                     "Item", param="stac")


def _search_items(url: str, collections: Sequence[str] | None, bbox: list[float] | None, datetime: str | None,
                  max_items: int | None) -> list:
    import logging

    from pystac_client import Client
    from pystac_client.exceptions import APIError

    pool = logging.getLogger("urllib3.connectionpool")  # its retry warnings: the error below says it once
    level = pool.level
    pool.setLevel(logging.ERROR)
    try:
        client = Client.open(url, timeout=60)
        search = client.search(collections=list(collections) if collections else None, bbox=bbox,
                               datetime=datetime, max_items=max_items)
        return list(search.items())
    except (APIError, OSError, ValueError) as exc:
        raise InputError(f"STAC API search at {url} failed: {str(exc).strip().splitlines()[0][:300]}",
                         param="stac") from None
    except Exception as exc:  # noqa: BLE001 -- a broken server, an unexpected reply: one line for the user
        raise InputError(f"STAC API search at {url} failed: {type(exc).__name__}: {exc}", param="stac") from None
    finally:
        pool.setLevel(level)


def _names(ids: Sequence[str]) -> list[str]:
    """The item ids as scene names: unchanged when file-system safe and unique (case-insensitive);
    otherwise made safe, with a short hash of the id."""
    safe = [_SAFE.sub("_", i) or "item" for i in ids]
    counts: dict[str, int] = {}
    for s in safe:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    return [s if (s == i and counts[s.lower()] == 1) else f"{s}-{hashlib.sha1(i.encode()).hexdigest()[:8]}"
            for s, i in zip(safe, ids)]


def _links(item) -> list[dict]:
    out = []
    for link in item.links:
        href = link.get_absolute_href() or link.href
        if href is None:
            continue
        d = {"rel": link.rel, "href": str(href)}
        if link.media_type:
            d["type"] = str(link.media_type)
        if link.title:
            d["title"] = link.title
        out.append(d)
    return out


def stac_scenes(source: str, asset: str | None = None, *, collections: Sequence[str] | None = None,
                bbox: list[float] | None = None, datetime: str | None = None,
                max_items: int | None = None) -> list[Scene]:
    """The scenes of a STAC file or API search (see the module docstring), in the source's order.

    ``source``: a STAC JSON file (path or URL) or a STAC API root URL (searched with
    ``collections``, ``bbox``, ``datetime``, at most ``max_items`` items). ``asset``: the key of
    the image asset (default: ``visual``, ``image``, ``data`` or ``rgb``, else the only GeoTIFF).
    """
    api = is_api(source)
    if not api and (collections or bbox is not None or datetime is not None):
        raise InputError("--collection, --bbox and --datetime filter a STAC API search; "
                         f"{source} is a STAC file", param="stac")
    if not api and not source.startswith(("http://", "https://")) and not Path(source).is_file():
        raise InputError(f"no STAC file {source}", param="stac")
    items = _search_items(source, collections, bbox, datetime, max_items) if api else _read_file_items(source)
    if max_items is not None and not api:
        items = items[:max_items]
    if not items:
        raise InputError(f"no STAC item in {source}" + (" matches the search" if api else ""), param="stac")
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise InputError(f"STAC item id {it.id!r} appears twice in {source}", param="stac")
        seen.add(it.id)
    scenes = []
    for name, it in zip(_names([it.id for it in items]), items):
        key, href = _pick_asset(it, asset)
        self_href = it.get_self_href()
        stac = {"item_id": it.id, "asset": key, "href": href, "item": self_href,
                "collection": it.collection_id, "datetime": _when(it), "links": _links(it)}
        scenes.append(Scene(name, asset_raster(href), 0, stac))
    return scenes


def _when(item) -> str | None:
    dt = item.datetime or item.common_metadata.start_datetime
    return dt.isoformat() if dt is not None else None
