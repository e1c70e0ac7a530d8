"""Local STAC sources for the tests: a STAC catalog of local COGs, an HTTP server with byte ranges
(what GDAL's /vsicurl/ needs to read a COG remotely), and a small fake STAC API answering ``/search``.

Everything listens on 127.0.0.1 only, on a free port, in a daemon thread; the servers are context
managers and stop when the block ends (and with the test process in any case).
"""

from __future__ import annotations

import json
import os
import re
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class RangeHandler(BaseHTTPRequestHandler):
    """GET / HEAD of the files under ``server.root`` with single ``Range: bytes=a-b`` requests (206);
    counts the GET requests and ranged GETs per path in ``server.hits`` / ``server.ranged``;
    JSON routes (``server.routes``: path -> callable(query dict) -> object) answer first."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        self._route(body)

    def do_GET(self) -> None:  # noqa: N802
        from urllib.parse import parse_qs, urlparse

        u = urlparse(self.path)
        if u.path in self.server.routes:
            query = {k: v[0] for k, v in parse_qs(u.query).items()}
            return self._route(query)
        path = (Path(self.server.root) / u.path.lstrip("/")).resolve()
        if not str(path).startswith(str(Path(self.server.root).resolve())) or not path.is_file():
            return self._send(404, b"not found", "text/plain")
        if self.command == "GET":  # HEADs (GDAL's size probe) are not reads
            self.server.hits[u.path] = self.server.hits.get(u.path, 0) + 1
        data = path.read_bytes()
        ctype = "application/json" if path.suffix == ".json" else "image/tiff"
        m = _RANGE.match(self.headers.get("Range", "").strip())
        if not m:
            return self._send(200, data, ctype)
        a, b = m.groups()
        size = len(data)
        start, end = (int(a), min(int(b) if b else size - 1, size - 1)) if a else (max(0, size - int(b)), size - 1)
        if start >= size or start > end:
            return self._send(416, b"", ctype, {"Content-Range": f"bytes */{size}"})
        if self.command == "GET":
            self.server.ranged[u.path] = self.server.ranged.get(u.path, 0) + 1
        self._send(206, data[start:end + 1], ctype, {"Content-Range": f"bytes {start}-{end}/{size}"})

    def _route(self, query: dict) -> None:
        from urllib.parse import urlparse

        self.server.searches.append(query)
        out = self.server.routes[urlparse(self.path).path](query)
        self._send(200, json.dumps(out).encode(), "application/geo+json" if "features" in out else "application/json")


@contextmanager
def serve(root: Path, routes: dict | None = None):
    """Serve ``root`` on http://127.0.0.1:PORT (ranges supported); yields the server (``.url``)."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    srv.daemon_threads = True
    srv.root, srv.routes, srv.hits, srv.ranged, srv.searches = str(root), dict(routes or {}), {}, {}, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=5)


def item_dict(item_id: str, href: str, bbox: list[float], when: datetime, collection: str = "aerial",
              asset: str = "visual") -> dict:
    """A STAC 1.1 Item with one COG asset ``asset`` at ``href``."""
    x0, y0, x1, y1 = bbox
    return {
        "type": "Feature", "stac_version": "1.1.0", "stac_extensions": [], "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
        "bbox": bbox, "properties": {"datetime": when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")},
        "links": [], "collection": collection,
        "assets": {asset: {"href": href, "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                           "roles": ["data", "visual"]},
                   "thumbnail": {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]}},
    }


def cog_bbox(path: Path) -> list[float]:
    import rasterio
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as ds:
        return [round(v, 7) for v in transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)]


def write_catalog(root: Path, cogs: dict[str, Path], base: str | None = None, asset: str = "visual") -> Path:
    """A self-contained STAC catalog (catalog.json -> collection.json -> items/<id>/<id>.json) of ``cogs``
    (item id -> file). ``base``: the asset hrefs' URL prefix (the files served over HTTP); default the
    files' paths relative to each item. Returns catalog.json."""
    import pystac

    cat = pystac.Catalog("aerial-catalog", "test catalog")
    coll = pystac.Collection("aerial", "test collection", pystac.Extent(
        pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
        pystac.TemporalExtent([[datetime(2024, 1, 1, tzinfo=timezone.utc), None]])), license="CC-BY-4.0")
    cat.add_child(coll)
    for k, (item_id, cog) in enumerate(cogs.items()):
        when = datetime(2024, 5, 1 + k, 10, tzinfo=timezone.utc)
        href = f"{base}/{cog.name}" if base else str(cog.resolve())
        d = item_dict(item_id, href, cog_bbox(cog), when, asset=asset)
        d.pop("collection")
        coll.add_item(pystac.Item.from_dict(d))
    coll.update_extent_from_items()
    cat.normalize_hrefs(str(root))
    cat.make_all_asset_hrefs_relative()
    cat.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def fake_api(items: list[dict], root_url_of) -> dict:
    """Routes of a minimal STAC API: ``/`` (landing page: conformance classes for item search) and
    ``/search`` (GET or POST: filters ``collections``, ``bbox`` and ``datetime`` (one day or a closed
    range), pages of ``limit`` items with a ``next`` link). ``root_url_of()``: the server's URL."""

    def landing(_q):
        url = root_url_of()
        return {"type": "Catalog", "stac_version": "1.1.0", "id": "fake-api", "description": "fake STAC API",
                "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                               "https://api.stacspec.org/v1.0.0/item-search"],
                "links": [{"rel": "self", "href": f"{url}/", "type": "application/json"},
                          {"rel": "root", "href": f"{url}/", "type": "application/json"},
                          {"rel": "search", "href": f"{url}/search", "type": "application/geo+json",
                           "method": "GET"},
                          {"rel": "search", "href": f"{url}/search", "type": "application/geo+json",
                           "method": "POST"}]}

    def search(q):
        colls = q.get("collections")
        if isinstance(colls, str):
            colls = colls.split(",")
        bbox = q.get("bbox")
        if isinstance(bbox, str):
            bbox = [float(v) for v in bbox.split(",")]
        dt = q.get("datetime")
        hits = []
        for it in items:
            if colls and it.get("collection") not in colls:
                continue
            if bbox:
                b = it["bbox"]
                if b[0] > bbox[2] or b[2] < bbox[0] or b[1] > bbox[3] or b[3] < bbox[1]:
                    continue
            if dt:
                lo, _, hi = dt.partition("/")
                when = it["properties"]["datetime"][:10]
                if (lo not in ("", "..") and when < lo[:10]) or (hi not in ("", "..") and when > (hi or lo)[:10]):
                    continue
            hits.append(it)
        limit = int(q.get("limit") or 10)
        start = int(q.get("token") or 0)
        page = hits[start:start + limit]
        links = []
        if start + limit < len(hits):
            nxt = dict(q, token=str(start + limit))
            links.append({"rel": "next", "href": f"{root_url_of()}/search", "method": "POST", "body": nxt,
                          "type": "application/geo+json"})
        return {"type": "FeatureCollection", "features": page, "links": links,
                "numberMatched": len(hits), "numberReturned": len(page)}

    return {"/": landing, "/search": search}


def gdal_env_for_local_http() -> dict:
    """GDAL settings so that /vsicurl/ reads from a local test server without probing for sidecar files."""
    return {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif",
            "GDAL_HTTP_MAX_RETRY": "0", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1",
            **{k: "" for k in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy") if k in os.environ}}
