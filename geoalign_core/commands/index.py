"""``geoalign index RASTER --out scene.parquet``: embed a scene once; query it many times with ``--index``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from . import options as cs

INDEX_OVERLAP = 0.25  # as find's (geoalign_core.index.DEFAULT_INDEX_OVERLAP; not imported: --help stays light)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="embed a raster once into a scene index, for instant find / heatmap / similar",
        description=(
            "One image pass over the raster's tile grid, keeping every tile's global embedding and "
            "patch grid (int8) in a GeoParquet file (one row per tile) and a .patches.npy file beside it. "
            "Afterwards `geoalign find|heatmap|tile-classify|match-regions|similar --index FILE` answer "
            "with the text model only. An interrupted build (Ctrl-C, a crash) resumes when the same "
            "command is run again."
        ),
    )
    p.add_argument("raster", help="input raster")
    p.add_argument("--info", action="store_true", help="print what an existing index (RASTER = its .parquet) holds")
    cs.add_raster_options(p, overlap=INDEX_OVERLAP, index=False,
                          out_help="index file, .parquet (default: <raster stem>_index.parquet here)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with cs.one_line_warnings():
        if args.info:
            return _info(args)
        cs.check_common(args)
        if cs.is_index_path(args.raster):
            raise InputError(f"{args.raster} is an index already (use --info to see what it holds)")
        out = args.out if args.out is not None else Path(f"{cs.default_stem(args.raster)}_index.parquet")
        if out.suffix.lower() != ".parquet":
            raise InputError(f"an index is a .parquet file; got {out}")
        from ..geo.writers import check_not_an_input, check_output

        check_not_an_input(out, args.raster)
        check_output(out, args.overwrite)
        cs.open_raster_check(args)
        from ..inference import runs  # the model stack: only once the inputs are known to be good

        predictor = cs.make_predictor(args)
        cs.say(args, f"index: {args.raster} with {predictor.model_source}")
        try:
            with cs.progress_bar(args, "index") as prog:
                result = runs.index(predictor, args.raster, out, overwrite=args.overwrite, progress=prog,
                                    stage=prog.stage, **{**cs.common_kwargs(args),
                                                         "overlap": cs.default_overlap(args)})
        except KeyboardInterrupt:
            raise InputError(_interrupted(out), code="interrupted") from None
    print(result.summary)
    return 0


def _interrupted(out: Path) -> str:
    """What an interrupted build leaves: the finished chunks, and how to go on."""
    from ..index.build import partial_dir

    work = partial_dir(out)
    parts = sorted(work.glob("part-*.npz")) if work.is_dir() else []
    if not parts:
        return f"interrupted before the first chunk was done; nothing kept (no {out} written)"
    return (f"interrupted; {len(parts)} finished chunk(s) are kept in {work}: run the same command again to "
            f"continue (no {out} written yet)")


def _info(args: argparse.Namespace) -> int:
    from ..index.store import check_patches, read_metadata

    emb, meta = read_metadata(args.raster)
    check_patches(Path(args.raster), emb)
    r, t, m = meta["raster"], meta["tiling"], meta["model"]
    print(f"index {args.raster}: {meta.get('n_tiles')} tiles of {t['tile_size']} px (overlap {t['overlap']:g}) "
          f"of {r['path']} ({r['width']}x{r['height']}, bands {r['bands']}); model {m['source']} "
          f"({m['arch']}, {m['dense_mode']} dense, fingerprint {m['fingerprint']}); embeddings "
          f"{emb['embedding']['dim']}-d, patches {emb['patch_embeddings']['dtype']} "
          f"{emb['patch_embeddings']['grid'][0]}x{emb['patch_embeddings']['grid'][1]}; made {meta.get('created')}")
    return 0
