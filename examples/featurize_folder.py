"""Featurize every slide in a folder and check what the tiler did.

``WSIFeaturizer`` reads each slide, finds tissue, cuts tiles at 0.5 µm per
pixel and encodes them. With ``on_error="warn"`` a slide that cannot be
used (no resolution metadata, no tissue, unreadable file) does not stop the
run: it comes back with zero tiles and its error, and ``failed_slides``
lists it. A QC image shows the tissue mask and the kept tiles of one slide.

The folder defaults to ``<data home>/slides`` (three real slides: an Aperio
SVS with resolution metadata, one without, and a plain TIFF).

Run:  python examples/featurize_folder.py [--quick] [--slides DIR] [--mpp 0.5]
"""

import sys
from pathlib import Path

from _common import parse_args
from skrnafm.datasets import get_data_home
from skrnafm.features import WSIFeaturizer, failed_slides
from skrnafm.slide import open_slide, save_tiling_qc, tile_slide



def add_arguments(parser):
    parser.add_argument("--slides", default=None, help="slide folder (default: <data home>/slides)")
    parser.add_argument("--mpp", type=float, default=0.5,
                        help="µm per pixel for slides without resolution metadata")


args = parse_args(__doc__.splitlines()[0], default_out="skrnafm_reports/examples",
                  add_arguments=add_arguments)
folder = Path(args.slides) if args.slides else get_data_home(args.data_home) / "slides"
if not folder.is_dir():
    sys.exit(f"slide folder not found: {folder}; pass --slides DIR, --data-home or SKRNAFM_DATA")
suffixes = {".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".jpg", ".png"}
slides = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in suffixes)
print(f"{len(slides)} slides in {folder}")

# First pass without a resolution override: slides lacking metadata fail
# with MissingResolutionError instead of being read at a guessed scale.
featurizer = WSIFeaturizer(max_tiles=8 if args.quick else 4000, on_error="warn",
                           cache_dir=args.out / "cache")
embeddings = featurizer.fit_transform(slides)
for emb in embeddings:
    status = f"{emb.n_tiles} tiles x {emb.embedding_dim}" if not emb.failed else "failed"
    print(f"  {Path(emb.slide).name:32s} {status}")
for index, slide, error in failed_slides(embeddings):
    print(f"  -> {Path(slide).name}: {error.splitlines()[0][:100]}")

# Second pass for the failed slides, with the scan resolution given.
mpp = args.mpp
retry = [slides[index] for index, _, _ in failed_slides(embeddings)]
if retry:
    again = featurizer.set_params(mpp=mpp).transform(retry)
    for emb in again:
        print(f"  {Path(emb.slide).name:32s} with mpp={mpp}: "
              f"{emb.n_tiles if not emb.failed else 'failed'} tiles")

# Tiling QC: the tissue mask and the kept tiles over a thumbnail.
with open_slide(slides[0]) as slide:
    grid = tile_slide(slide, max_tiles=featurizer.max_tiles)
    qc = args.out / f"{Path(slides[0]).stem}_tiling_qc.png"
    save_tiling_qc(slide, grid, qc)
print(f"tiling QC of {Path(slides[0]).name}: {grid.n_tiles} tiles, written to {qc}")
