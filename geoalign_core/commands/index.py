"""``geoalign index RASTER --out scene.parquet``: embed a scene once; query it many times with ``--index``.

``geoalign index A.tif B.tif ... | --from-list L | 'folder/*.tif' --out idx/``: a collection, one
index per scene in a folder, shared between torchrun's ranks or ``--shard I/N`` job-array tasks
(:mod:`geoalign_core.index.collection_build`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import InputError
from ..params import IndexParams
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = cs.task_parser(sub, IndexParams, raster_help=None)
    p.add_argument("rasters", nargs="*", metavar="RASTER",
                   help="input raster(s); quoted glob patterns ('folder/*.tif', 'tiles/**/*.tif') are expanded. "
                        "Several rasters make a collection: one index per scene in the --out folder")
    p.add_argument("--from-list", default=None, metavar="FILE",
                   help="also index the rasters listed in FILE (one path per line; # comments)")
    stac = p.add_argument_group("scenes from STAC")
    stac.add_argument("--stac", default=None, metavar="FILE|URL",
                      help="also index the items of a STAC file (ItemCollection, Catalog, Collection or Item; a path "
                           "or URL ending .json) or of a STAC API search (an API root URL, with --collection / "
                           "--bbox / --datetime); each item is a scene named by its id")
    stac.add_argument("--asset", default=None, metavar="KEY",
                      help="the items' image asset (default: visual, image, data or rgb, else the only GeoTIFF); "
                           "local files or COGs read remotely (http(s) through GDAL /vsicurl/, s3, gs)")
    stac.add_argument("--collection", action="append", default=None, metavar="C",
                      help="STAC API search: items of collection C (repeat, or C1,C2)")
    stac.add_argument("--bbox", default=None, metavar="MINX,MINY,MAXX,MAXY",
                      help="STAC API search: items intersecting this box (WGS84 degrees)")
    stac.add_argument("--datetime", default=None, metavar="RANGE",
                      help="STAC API search: items in this time or range (RFC 3339, e.g. 2024-01-01/2024-06-30)")
    stac.add_argument("--max-items", type=int, default=None, metavar="N",
                      help="at most N STAC items (default: all that match)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="index share I of N of the scenes (0-based; balanced by pixel count), for job arrays; "
                        "under torchrun each rank takes its share by itself")
    ann = p.add_mutually_exclusive_group()
    ann.add_argument("--ann", dest="ann", action="store_true", default=None,
                     help="collection: build its approximate-search (FAISS) index once every scene is done "
                          "(default: only for collections of at least 9 M patches, where it pays)")
    ann.add_argument("--no-ann", dest="ann", action="store_false", help="collection: never build the ANN index")
    p.add_argument("--info", action="store_true",
                   help="print what an existing index (RASTER = its .parquet, or a collection folder) holds")
    cs.add_task_options(p, IndexParams, out_help="index file, .parquet (default: <raster stem>_index.parquet here); "
                                                 "for a collection, a folder")
    p.set_defaults(func=run)


def _collection_wanted(args: argparse.Namespace) -> bool:
    from ..index.scenes import is_pattern

    out = args.out
    return (len(args.rasters) > 1 or args.from_list is not None or args.shard is not None or args.stac is not None
            or int(os.environ.get("WORLD_SIZE", "1")) > 1
            or any(is_pattern(r) and not Path(r).exists() for r in args.rasters)
            or (out is not None and (out.is_dir() or str(out).endswith(("/", os.sep)) or out.suffix == "")))


def run(args: argparse.Namespace) -> int:
    args.out = None if args.out is None else Path(args.out)
    with cs.one_line_warnings():
        if args.info:
            if len(args.rasters) != 1:
                raise InputError("--info takes one index (a .parquet file or a collection folder)")
            args.raster = args.rasters[0]
            return _info(args)
        cs.check_common(args, IndexParams)
        if not args.rasters and args.from_list is None and args.stac is None:
            raise InputError("give a raster to index (or several, or --from-list FILE, or --stac FILE|URL)")
        if args.stac is None and (args.asset or args.collection or args.bbox or args.datetime
                                  or args.max_items is not None):
            raise InputError("--asset, --collection, --bbox, --datetime and --max-items are for --stac")
        if _collection_wanted(args):
            return _run_collection(args)
        if args.ann is not None:
            raise InputError("--ann / --no-ann are for a collection (several rasters, --out FOLDER)")
        args.raster = args.rasters[0]
        if cs.is_index_path(args.raster):
            raise InputError(f"{args.raster} is an index already (use --info to see what it holds)")
        out = cs.default_out(args, "_index.parquet")
        try:
            cs.run_task(args, cs.task_from_args(args, IndexParams, out=out),
                        lambda p, model: f"index: {p.raster} with {model}")
        except KeyboardInterrupt:
            raise InputError(_interrupted(out), code="interrupted") from None
    _describe(args, out)
    return 0


def _describe(args: argparse.Namespace, index: Path) -> None:
    """Write the index's STAC description (:mod:`geoalign_core.index.stac_out`)."""
    from ..index.stac_out import write_stac

    coll = write_stac(index)
    cs.say(args, f"STAC: {coll}")


def _stac_scenes(args: argparse.Namespace) -> list:
    if args.stac is None:
        return []
    from ..index.stac_in import parse_bbox, stac_scenes

    if args.max_items is not None and args.max_items < 1:
        raise InputError(f"--max-items must be at least 1; got {args.max_items}", param="max_items")
    collections = [c.strip() for cc in (args.collection or []) for c in cc.split(",") if c.strip()] or None
    return stac_scenes(args.stac, args.asset, collections=collections, bbox=parse_bbox(args.bbox),
                       datetime=args.datetime, max_items=args.max_items)


def _interrupted(out: Path) -> str:
    """What an interrupted build leaves: the finished chunks, and how to go on."""
    from ..index.build import partial_dir

    work = partial_dir(out)
    parts = sorted(work.glob("part-*.npz")) if work.is_dir() else []
    if not parts:
        return f"interrupted before the first chunk was done; nothing kept (no {out} written)"
    return (f"interrupted; {len(parts)} finished chunk(s) are kept in {work}: run the same command again to "
            f"continue (no {out} written yet)")


def _run_collection(args: argparse.Namespace) -> int:
    """Index many scenes into the ``--out`` folder (this process's share of them)."""
    from ..index.scenes import parse_shard

    if args.out is None:
        raise InputError("several scenes make a collection: name its folder with --out (e.g. --out idx/)")
    from ..index.scenes import check_collection_root, expand_inputs

    check_collection_root(args.out)
    if args.bounds is not None:
        raise InputError("--bounds is for one raster; a collection indexes whole scenes")
    shard = parse_shard(args.shard)
    if shard is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("--shard is for job arrays; under torchrun each rank takes its share by itself")
    from ..index.collection_build import build_collection, dist_env, engine_device, maybe_build_ann

    if args.rasters or args.from_list is not None:
        expand_inputs(args.rasters, args.from_list)  # a pattern that matches nothing: fail before the model
    stac_scenes = _stac_scenes(args)  # a bad STAC source: fail before the model
    env = dist_env()
    args.device = engine_device(args.device, env)
    predictor = cs.make_predictor(args)
    main = env.rank == 0

    def say(text: str) -> None:
        cs.say(args, text if env.world == 1 else f"[rank {env.rank}] {text}")

    if main:
        cs.say(args, f"index: collection {args.out} with {predictor.model_source}"
                     + (f", shard {shard[0]}/{shard[1]}" if shard else "")
                     + (f", {env.world} ranks" if env.world > 1 else ""))
    try:
        with cs.progress_bar(args, "index") as prog:
            current = {"scene": ""}

            def progress_for(scene):
                current["scene"] = scene.name
                return prog

            def stage(name: str) -> None:
                prog.stage(f"{current['scene']}: {name}")

            result = build_collection(predictor, args.rasters, args.out, from_list=args.from_list,
                                      scenes=stac_scenes, shard=shard,
                                      env=env, overwrite=args.overwrite, bands=args.bands,
                                      tile_size=args.tile_size, overlap=args.overlap,
                                      allow_no_crs=args.allow_no_crs, progress_for=progress_for,
                                      stage=stage, say=say)
        if main:
            maybe_build_ann(args.out, args.ann, say)
        if main or shard is not None:
            from ..index.scenes import manifest_scenes, read_manifest

            if any(s.part(args.out).exists() for s in manifest_scenes(read_manifest(args.out))):
                _describe(args, args.out)
    except KeyboardInterrupt:
        raise InputError(f"interrupted; finished scenes and chunks are kept in {args.out}: run the same "
                         "command again to continue", code="interrupted") from None
    finally:
        if env.group:
            import torch.distributed as dist

            dist.destroy_process_group()
    if main:
        print(result.summary())
    return 1 if result.failed else 0


def _info(args: argparse.Namespace) -> int:
    from ..index.scenes import is_collection
    from ..index.store import check_patches, load_patches, read_metadata

    if is_collection(args.raster):
        return _collection_info(args)

    emb, meta = read_metadata(args.raster)
    import pyarrow.parquet as pq

    path = Path(args.raster)
    load_patches(path, check_patches(path, emb), emb, pq.read_metadata(path).num_rows)
    r, t, m = meta["raster"], meta["tiling"], meta["model"]
    print(f"index {args.raster}: {meta.get('n_tiles')} tiles of {t['tile_size']} px (overlap {t['overlap']:g}) "
          f"of {r['path']} ({r['width']}x{r['height']}, bands {r['bands']}); model {m['source']} "
          f"({m['arch']}, {m['dense_mode']} dense, fingerprint {m['fingerprint']}); embeddings "
          f"{emb['embedding']['dim']}-d, patches {emb['patch_embeddings']['dtype']} "
          f"{emb['patch_embeddings']['grid'][0]}x{emb['patch_embeddings']['grid'][1]}; made {meta.get('created')}")
    return 0


def _collection_info(args: argparse.Namespace) -> int:
    from ..index.scenes import manifest_scenes, read_manifest

    root = Path(args.raster)
    doc = read_manifest(root)
    scenes = manifest_scenes(doc)
    done = [s for s in scenes if s.part(root).exists()]
    st = doc["settings"]
    print(f"collection {root}: {len(done)} of {len(scenes)} scene(s) indexed; model {st['model']} (fingerprint "
          f"{st['model_fingerprint']}); {st['tile_size']} px tiles, overlap {st['overlap']:g}")
    for s in scenes:
        print(f"  {s.name}: {s.raster} ({'indexed' if s.part(root).exists() else 'not indexed'})")
    return 0
