"""Benchmark slide featurization with the default encoder.

Measures, on the machine it runs on:

* the encoder alone on a synthetic batch (fp32, channels-last fp32,
  channels-last under bf16 autocast),
* the CMU slide end to end (open, tissue mask, tiling, reading, encoding):
  tiles per second, the share of wall time spent inside the encoder, and
  fp32 against bf16 features (cosine similarity per tile),
* one HER2ST section (C2.jpg at 0.69 µm/px) end to end: seconds per section,
* the peak resident memory of the process.

Prints the figures and writes them to docs/benchmarks/featurize.md.

Usage::

    python benchmarks/bench_featurize.py [--data-dir DIR] [--output FILE] [--threads N]

The data folder defaults to $SKRNAFM_DATA, else ../shared/data beside the
project root.
"""

import argparse
import contextlib
import datetime
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
import torch

import skrnafm
from skrnafm.features import EfficientNetLite0Encoder, WSIFeaturizer

ROOT = Path(__file__).resolve().parent.parent


def default_data_dir():
    env = os.environ.get("SKRNAFM_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def peak_rss_mib():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def bench_encoder_only(repeats):
    """Tiles per second of the bare encoder on a batch of 64 random tiles."""
    encoder = EfficientNetLite0Encoder()
    tiles = np.random.default_rng(0).integers(0, 256, size=(64, 256, 256, 3), dtype=np.uint8)
    batch = encoder.transform(tiles)
    results = {}
    settings = [
        ("fp32", False, False),
        ("fp32, channels-last", True, False),
        ("bf16 autocast, channels-last", True, True),
    ]
    for label, channels_last, bf16 in settings:
        if channels_last:
            encoder = encoder.to(memory_format=torch.channels_last)
            x = batch.contiguous(memory_format=torch.channels_last)
        else:
            x = batch
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        times = []
        with torch.inference_mode(), autocast:
            encoder(x)  # one-time kernel selection
            for _ in range(repeats):
                start = time.perf_counter()
                encoder(x)
                times.append(time.perf_counter() - start)
        results[label] = 64 / statistics.median(times)
    return results


def run_slide(featurizer, source):
    start = time.perf_counter()
    (item,) = featurizer.transform([source])
    wall = time.perf_counter() - start
    return item, wall


def cosine_rows(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks" / "featurize.md")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    cmu = args.data_dir / "slides" / "cmu-1-small-region.svs"
    her2st = args.data_dir / "her2st" / "C2.jpg"
    for path in (cmu, her2st):
        if not path.is_file():
            sys.exit(f"Data file not found: {path}. Pass --data-dir or set SKRNAFM_DATA.")

    load_before = load_average()
    print(f"torch threads: {torch.get_num_threads()}, load average: {load_before:.1f}")

    encoder_rates = bench_encoder_only(args.repeats)
    for label, rate in encoder_rates.items():
        print(f"encoder only, {label}: {rate:.1f} tiles/s")

    # Warm-up: loads the weights and creates the kernels for these batch
    # shapes, which a long run pays once.
    WSIFeaturizer().transform([cmu])

    cmu_runs = {}
    for precision in ("auto", "fp32"):
        featurizer = WSIFeaturizer(precision=precision)
        runs = [run_slide(featurizer, cmu) for _ in range(args.repeats)]
        item = runs[0][0]
        walls = [wall for _, wall in runs]
        encoder_share = statistics.median(
            run_item.metadata["encoder_seconds"] / wall for run_item, wall in runs
        )
        cmu_runs[precision] = (item, statistics.median(walls), encoder_share)
        print(
            f"CMU slide, precision={precision}: {item.n_tiles} tiles, "
            f"{item.n_tiles / statistics.median(walls):.1f} tiles/s end to end, "
            f"encoder {100 * encoder_share:.0f}% of wall time"
        )
    rss_after_cmu = peak_rss_mib()

    # On a shared machine a full-width OpenMP team can stall; one thread
    # shows how much of the gap is contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    one_thread_runs = [run_slide(WSIFeaturizer(), cmu) for _ in range(args.repeats)]
    torch.set_num_threads(threads)
    one_thread_wall = statistics.median(wall for _, wall in one_thread_runs)
    one_thread_rate = one_thread_runs[0][0].n_tiles / one_thread_wall
    print(f"CMU slide, precision=auto, 1 torch thread: {one_thread_rate:.1f} tiles/s end to end")

    auto_item = cmu_runs["auto"][0]
    fp32_item = cmu_runs["fp32"][0]
    np.testing.assert_array_equal(auto_item.coords, fp32_item.coords)
    cosine = cosine_rows(auto_item.features, fp32_item.features)
    print(f"bf16 vs fp32 cosine similarity: min {cosine.min():.5f}, mean {cosine.mean():.5f}")

    her2st_item, her2st_wall = run_slide(WSIFeaturizer(mpp=0.69), her2st)
    rss_after_her2st = peak_rss_mib()
    print(
        f"HER2ST C2: {her2st_item.n_tiles} tiles in {her2st_wall:.1f} s "
        f"({her2st_item.n_tiles / her2st_wall:.1f} tiles/s), encoder "
        f"{100 * her2st_item.metadata['encoder_seconds'] / her2st_wall:.0f}% of wall time"
    )
    print(f"peak RSS: {rss_after_cmu:.0f} MiB after CMU, {rss_after_her2st:.0f} MiB after HER2ST")
    load_after = load_average()

    auto_dtype = "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    command = "python benchmarks/bench_featurize.py" + (
        f" --threads {args.threads}" if args.threads else ""
    )
    lines = [
        "## Featurization (WSIFeaturizer, EfficientNet-Lite0)",
        "",
        f"Command: `{command}`. Date: {datetime.date.today().isoformat()}. "
        f"Machine: {os.cpu_count()}-core CPU ({cpu_name()}), no GPU; torch threads "
        f"{torch.get_num_threads()}. Versions: Python {platform.python_version()}, "
        f"torch {torch.__version__}, scikit-learn {sklearn.__version__}, numpy "
        f"{np.__version__}, skrnafm {skrnafm.__version__}.",
        "",
        f"The 1-minute load average was {load_before:.1f} before and {load_after:.1f} "
        "after the run (2.0 means both cores busy)"
        + (
            ": other jobs shared the machine, so an idle one is expected to give higher figures."
            if load_before >= 1.0
            else "."
        ),
        "",
        "| measurement | value |",
        "| --- | --- |",
    ]
    for label, rate in encoder_rates.items():
        lines.append(f"| encoder only, batch 64, {label} | {rate:.1f} tiles/s |")
    for precision, (item, wall, share) in cmu_runs.items():
        shown = f"{precision} ({auto_dtype})" if precision == "auto" else precision
        lines.append(
            f"| CMU slide end to end, precision={shown}, {item.n_tiles} tiles | "
            f"{item.n_tiles / wall:.1f} tiles/s, {wall:.2f} s, encoder {100 * share:.0f}% of wall |"
        )
    lines += [
        f"| CMU slide end to end, precision=auto, 1 torch thread | {one_thread_rate:.1f} tiles/s, "
        f"{one_thread_wall:.2f} s |",
        f"| bf16 vs fp32 features, cosine per tile (CMU) | min {cosine.min():.5f}, "
        f"mean {cosine.mean():.5f} |",
        f"| HER2ST section C2.jpg (mpp=0.69), {her2st_item.n_tiles} tiles | "
        f"{her2st_wall:.1f} s per section, {her2st_item.n_tiles / her2st_wall:.1f} tiles/s |",
        f"| peak RSS after the CMU runs | {rss_after_cmu:.0f} MiB |",
        f"| peak RSS after the HER2ST section | {rss_after_her2st:.0f} MiB |",
        "",
        "End to end covers opening the slide, the tissue mask, tiling, reading "
        "and resizing tiles in a reader thread, and encoding; the first call's "
        "weight loading is excluded by a warm-up run. Encoder share is the time "
        "spent in encoder forward passes divided by the wall time of the slide. "
        "The HER2ST image is a 9,300 x 9,900 px JPEG that the plain-image reader "
        "decodes whole, which dominates its memory figure; pyramidal slides are "
        "read tile by tile.",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
