"""Benchmark the velocity network and the samplers at RNA-FM's size.

Run from the repository root::

    python benchmarks/bench_flow.py            # three repeats of each measurement
    python benchmarks/bench_flow.py --quick    # one repeat

Measures, at G = 20,820 genes, the 380 GO molecular-function sets of the
TCGA gene list, K = 100 tokens of width D = 1,024, H = 256, depth 7,
8 heads and batch 32:

* one training step (forward, backward, gradient clipping at 1.0 and fused
  AdamW), in fp32 and under bf16 autocast;
* guided sampling of 32 slides (guidance scale 2): the condition encoded
  once, then 20 Euler steps, and the default sampler;
* the error of each sampler against a fine Dormand-Prince reference on a
  small trained network, to choose the default sampler;
* how the step time grows with the number of genes and how sampling time
  grows with the number of slides;
* peak resident memory of each measurement (each runs in its own process).

Prints the figures and writes ``docs/benchmarks/flow.md``. The machine may
be shared: every time is reported as the fastest of several repeats in wall
time, and as process CPU time divided by the thread count, which estimates
the wall time on otherwise idle cores.

Needs the TCGA gene list and the bundled GO collection: set ``SKRNAFM_DATA``
or pass ``--data-home``.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks" / "flow.md"
PAPER = {"n_tokens": 100, "token_dim": 1024, "hidden_dim": 256, "depth": 7, "n_heads": 8}
BATCH = 32
GUIDANCE = 2.0


# ------------------------------------------------------------------ helpers


def go_gene_sets(data_home, n_genes=None):
    """Resolve the bundled GO sets on the TCGA gene list, optionally on its first n_genes genes."""
    import warnings

    from skrnafm.datasets import load_tcga_gene_list
    from skrnafm.pathways import resolve_gene_sets

    names = list(load_tcga_gene_list(data_home))
    if n_genes is not None:
        names = names[:n_genes]
    with warnings.catch_warnings():
        # The background count warning is expected here.
        warnings.simplefilter("ignore")
        return resolve_gene_sets("go_molecular_function", names, len(names))


def build_net(gene_sets, seed=0, **overrides):
    from skrnafm.nn import VelocityNet

    torch.manual_seed(seed)
    return VelocityNet(gene_sets, **{**PAPER, **overrides})


def timed(fn, repeats, warmup=None):
    """Run warmup (default: fn) once, then return (fastest wall s, fastest CPU s / threads) of fn."""
    (warmup or fn)()
    walls, cpus = [], []
    threads = torch.get_num_threads()
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append((time.process_time() - cpu) / threads)
    return min(walls), min(cpus)


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def autocast(precision):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


# ----------------------------------------------------------------- sections


def section_train(args):
    gene_sets = go_gene_sets(args.data_home, args.n_genes)
    net = build_net(gene_sets)
    n_params = sum(p.numel() for p in net.parameters())
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01, betas=(0.9, 0.99), fused=True)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(BATCH, PAPER["n_tokens"], PAPER["token_dim"], generator=gen)
    x1 = torch.randn(BATCH, gene_sets.n_genes, generator=gen)

    def step():
        with autocast(args.precision):
            cond = net.encode_condition(tokens, drop_mask=torch.rand(BATCH, generator=gen) < 0.1)
            t = torch.rand(BATCH, generator=gen)
            x0 = torch.randn(x1.shape, generator=gen)
            x_t = t[:, None] * x1 + (1 - t[:, None]) * x0
            velocity = net(x_t, t, cond)
        loss = (velocity.float() - (x1 - x0)).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()

    wall, cpu = timed(step, args.repeats)
    return {
        "n_genes": gene_sets.n_genes,
        "n_sets": net.n_sets,
        "n_params": n_params,
        "n_padding": 2 * net.n_padded_weights * net.hidden_dim,
        "buckets": len(net.bucket_sizes),
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_gb": peak_rss_gb(),
    }


def randomize_heads(net, scale=0.02, seed=0):
    """Give zero-initialised heads and gates small random values (padding excluded) so v != 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith("out_") or bool(param.any()):
                continue
            param.copy_(scale * torch.randn(param.shape, generator=gen))
        offset = 0
        for (n_bucket, width), weight in zip(net.bucket_sizes, net.out_weights):
            rows = net.padded_index[offset : offset + n_bucket * width].view(n_bucket, width)
            weight.copy_(scale * torch.randn(weight.shape, generator=gen) * (rows < net.n_genes)[:, :, None])
            offset += n_bucket * width
    return net


def section_sample(args):
    from skrnafm.flow import ClassifierFreeGuidance, integrate

    gene_sets = go_gene_sets(args.data_home)
    net = randomize_heads(build_net(gene_sets)).eval()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randn(args.n_slides, PAPER["n_tokens"], PAPER["token_dim"], generator=gen)
    noise = torch.randn(args.n_slides, gene_sets.n_genes, generator=gen)
    info = {}

    def sample():
        # One autocast region for the whole run, so weights are cast to bf16 once.
        with torch.no_grad(), autocast(args.precision):
            cond = net.encode_condition(tokens)
            guided = ClassifierFreeGuidance(net, cond, net.null_condition(1), scale=GUIDANCE)
            _, info["solver"] = integrate(guided, noise, method=args.method, n_steps=args.n_steps, return_info=True)

    def warmup():
        # One guided evaluation compiles the bf16 kernels without a whole run.
        with torch.no_grad(), autocast(args.precision):
            cond = net.encode_condition(tokens)
            ClassifierFreeGuidance(net, cond, net.null_condition(1), scale=GUIDANCE)(noise, 0.5)

    wall, cpu = timed(sample, args.repeats, warmup)
    return {
        "n_slides": args.n_slides,
        "method": args.method,
        "n_steps": args.n_steps,
        "nfe": info["solver"].nfe,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_gb": peak_rss_gb(),
    }


def section_accuracy(args):
    """Train a small network on a curved conditional target, then compare samplers."""
    from skrnafm.flow import ClassifierFreeGuidance, LinearPath, integrate
    from skrnafm.pathways import GeneSetIndex  # noqa: F401  (documents the input type)

    # A small network gains nothing from a second thread; on a busy machine
    # the OpenMP synchronisation would dominate.
    torch.set_num_threads(1)
    gene_sets = go_gene_sets(args.data_home, 500)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = build_net(gene_sets, n_tokens=8, token_dim=32, hidden_dim=64, depth=2, n_heads=4)
    n_genes = gene_sets.n_genes

    # Targets: a mixture of two subtypes per condition plus correlated noise,
    # so the velocity field bends, as it does on real expression.
    n_types = 16
    prototypes = torch.randn(n_types, 8, 32, generator=gen)
    centres = torch.randn(n_types, 2, n_genes, generator=gen)
    loadings = torch.randn(4, n_genes, generator=gen) * 0.5

    def draw(kind):
        branch = torch.randint(0, 2, kind.shape, generator=gen)
        factors = torch.randn(len(kind), 4, generator=gen)
        return centres[kind, branch] + factors @ loadings + 0.3 * torch.randn(len(kind), n_genes, generator=gen)

    path = LinearPath()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for _ in range(args.train_steps):
        kind = torch.randint(0, n_types, (64,), generator=gen)
        batch = path.sample(draw(kind), generator=gen)
        cond = net.encode_condition(prototypes[kind], drop_mask=torch.rand(64, generator=gen) < 0.1)
        loss = (net(batch.x_t, batch.t, cond) - batch.u).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()

    kind = torch.arange(n_types).repeat_interleave(2)
    noise = torch.randn(len(kind), n_genes, generator=gen)
    with torch.no_grad():
        cond = net.encode_condition(prototypes[kind])

        def run(method, n_steps=None, precision="fp32", **tolerances):
            with autocast(precision):
                guided = ClassifierFreeGuidance(net, cond, net.null_condition(1), scale=GUIDANCE)
                return integrate(guided, noise, method=method, n_steps=n_steps or 1, return_info=True, **tolerances)

        reference, reference_info = run("rk4", 100)
        scale = float(reference.std())
        rows = []
        settings = [("euler", 20), ("midpoint", 2), ("midpoint", 3), ("midpoint", 4),
                    ("heun", 2), ("heun", 3), ("heun", 4), ("rk4", 2)]
        for precision in ("fp32", "bf16"):
            for method, n_steps in settings:
                x, info = run(method, n_steps, precision)
                print(f"accuracy {precision} {method} {n_steps}", file=sys.stderr, flush=True)
                rows.append({"method": method, "n_steps": n_steps, "precision": precision, "nfe": info.nfe,
                             "rel_rmse": float((x - reference).pow(2).mean().sqrt()) / scale})
            x, info = run("dopri5", precision=precision, rtol=1e-3, atol=1e-3, max_steps=200)
            rows.append({"method": "dopri5 (rtol=atol=1e-3)", "n_steps": info.n_steps, "precision": precision,
                         "nfe": info.nfe, "rel_rmse": float((x - reference).pow(2).mean().sqrt()) / scale})
    return {"final_loss": loss.item(), "reference_nfe": reference_info.nfe, "rows": rows, "n_genes": n_genes,
            "train_steps": args.train_steps}


def section_ops(args):
    """Time single attention layers, to show what bounds the gene-token blocks."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    shape = (BATCH, PAPER["n_heads"], 381, PAPER["hidden_dim"] // PAPER["n_heads"])
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        q, k, v = (torch.randn(shape, generator=gen).to(dtype).requires_grad_() for _ in range(3))

        def forward_backward():
            F.scaled_dot_product_attention(q, k, v).sum().backward()

        def forward():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v)

        name = str(dtype).replace("torch.", "")
        out[f"attention_forward_{name}"] = timed(forward, args.repeats)
        out[f"attention_forward_backward_{name}"] = timed(forward_backward, args.repeats)

    # Guided sampling runs the conditional and null halves in one batch of 64, in bf16.
    q, k, v = (torch.randn((2 * BATCH, *shape[1:]), generator=gen).to(torch.bfloat16) for _ in range(3))

    def guided_forward():
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v)

    out["attention_forward_bfloat16_batch_64"] = timed(guided_forward, args.repeats)
    return out


SECTIONS = {"train": section_train, "sample": section_sample, "accuracy": section_accuracy, "ops": section_ops}


# ------------------------------------------------------------------- driver


def run_section(name, data_home, **options):
    """Run one section in a fresh process so its peak memory is its own."""
    command = [sys.executable, str(Path(__file__).resolve()), "--section", name]
    if data_home:
        command += ["--data-home", str(data_home)]
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    print(f"running section {name} {options}", file=sys.stderr, flush=True)
    result = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def fmt(seconds_pair):
    wall, cpu = seconds_pair
    return f"{wall:.2f} s ({cpu:.2f} s)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-home", default=os.environ.get("SKRNAFM_DATA"), help="data folder with tcga/gene_list.csv")
    parser.add_argument("--quick", action="store_true", help="time each measurement once instead of three times")
    parser.add_argument("--section", choices=sorted(SECTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="bf16", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--n-genes", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n-slides", type=int, default=BATCH, help=argparse.SUPPRESS)
    parser.add_argument("--method", default="euler", help=argparse.SUPPRESS)
    parser.add_argument("--n-steps", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--train-steps", type=int, default=400, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.section:
        if args.n_genes == 0:
            args.n_genes = None
        print(json.dumps(SECTIONS[args.section](args)))
        return

    repeats = 1 if args.quick else 3
    load_before = os.getloadavg()
    started = time.perf_counter()
    results = {"train": {}, "sample": {}, "scaling_genes": {}, "scaling_slides": {}}
    common = {"repeats": repeats}

    for precision in ("fp32", "bf16"):
        results["train"][precision] = run_section("train", args.data_home, precision=precision, **common)
        print(f"train step {precision}: {fmt((results['train'][precision]['wall_s'], results['train'][precision]['cpu_s']))}")
    results["accuracy"] = run_section("accuracy", args.data_home, train_steps=150 if args.quick else 400)
    default_method, default_steps = choose_default(results["accuracy"]["rows"])
    samplers = [("euler", 20), (default_method, default_steps)]
    for precision in ("fp32", "bf16"):
        for method, n_steps in samplers:
            key = f"{precision} {method} {n_steps}"
            results["sample"][key] = run_section("sample", args.data_home, precision=precision, method=method,
                                                 n_steps=n_steps, **common)
            print(f"sample {key}: {fmt((results['sample'][key]['wall_s'], results['sample'][key]['cpu_s']))}")
    results["ops"] = run_section("ops", args.data_home, **common)
    for n_genes in (1000, 5000):
        results["scaling_genes"][n_genes] = run_section("train", args.data_home, precision="bf16", n_genes=n_genes,
                                                        repeats=repeats)
    results["scaling_genes"][20820] = results["train"]["bf16"]
    for n_slides in (1, 8):
        results["scaling_slides"][n_slides] = run_section("sample", args.data_home, precision="bf16",
                                                          n_slides=n_slides, method=default_method,
                                                          n_steps=default_steps, repeats=repeats)
    results["scaling_slides"][BATCH] = results["sample"][f"bf16 {default_method} {default_steps}"]
    results["default"] = (default_method, default_steps)
    results["elapsed_s"] = time.perf_counter() - started
    results["load"] = (load_before, os.getloadavg())
    shown = [*(sys.argv[1:] if argv is None else argv)]
    if "--data-home" in shown:
        # The data folder is machine-specific, so the page names the option only.
        shown[shown.index("--data-home") + 1] = "DATA"
    write_doc(results, " ".join(["python", "benchmarks/bench_flow.py", *shown]))
    print(f"wrote {DOC.relative_to(REPO)}")


def choose_default(rows):
    """Pick the fixed-step fp32 sampler with the fewest evaluations that is at least as accurate as 20 Euler steps."""
    euler = next(r for r in rows if r["method"] == "euler" and r["n_steps"] == 20 and r["precision"] == "fp32")
    candidates = [
        r for r in rows
        if r["precision"] == "fp32" and r["method"] in ("midpoint", "heun", "rk4") and r["rel_rmse"] <= euler["rel_rmse"]
    ]
    best = min(candidates, key=lambda r: (r["nfe"], r["rel_rmse"]))
    return best["method"], best["n_steps"]


def write_doc(results, command):
    import sklearn

    train = results["train"]
    lines = [
        "## Flow-matching core: velocity network speed and sampler accuracy",
        "",
        f"Command: `{command}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{results['elapsed_s'] / 60:.0f} min.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads, no GPU. Load average before/after "
        f"{results['load'][0][0]:.1f}/{results['load'][1][0]:.1f}"
        + (": other jobs shared the cores." if results["load"][0][0] >= 1.0 else "."),
        f"Versions: Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"scikit-learn {sklearn.__version__}.",
        "",
        "Times are the fastest of the repeats in wall-clock seconds, followed in brackets by "
        "process CPU time divided by the thread count, an estimate of the wall time on idle cores.",
        "",
        "### Size",
        "",
        f"Paper configuration: G = {train['bf16']['n_genes']:,} genes, {train['bf16']['n_sets']} GO "
        f"molecular-function sets plus one background token, K = 100, D = 1,024, H = 256, depth 7, "
        f"8 heads, batch {BATCH}.",
        f"Parameters: {train['bf16']['n_params'] / 1e6:.1f} M, of which {train['bf16']['n_padding'] / 1e6:.1f} M "
        f"are zero padding of the per-set layers ({train['bf16']['buckets']} size buckets).",
        "",
        "### Training step (forward, backward, clipping, fused AdamW)",
        "",
        "| precision | time per step | peak RSS |",
        "| --- | --- | --- |",
    ]
    for precision, row in train.items():
        lines.append(f"| {precision} | {fmt((row['wall_s'], row['cpu_s']))} | {row['peak_rss_gb']:.1f} GiB |")
    lines += ["", "Target: at most 1.5 s per step, peak memory under 8 GB.", ""]

    lines += [
        f"### Guided sampling of {BATCH} slides (guidance scale {GUIDANCE})",
        "",
        "| precision | sampler | velocity evaluations | time | peak RSS |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, row in results["sample"].items():
        precision = key.split()[0]
        lines.append(f"| {precision} | {row['method']}, {row['n_steps']} steps | {row['nfe']} | "
                     f"{fmt((row['wall_s'], row['cpu_s']))} | {row['peak_rss_gb']:.1f} GiB |")
    method, n_steps = results["default"]
    lines += [
        "",
        "Each guided evaluation runs the gene branch on the conditional and null conditions "
        "in one batch of 64; the condition is encoded once per slide before the solver starts.",
        f"Targets: at most 12 s for 20 Euler steps, at most 5 s for the default sampler ({method}, {n_steps} steps).",
        "",
    ]

    accuracy = results["accuracy"]
    lines += [
        "### Sampler accuracy",
        "",
        f"A small network (the first {accuracy['n_genes']:,} genes of the list with their GO sets, H = 64, "
        f"depth 2) trained for {accuracy['train_steps']} steps on a two-branch mixture per condition. "
        f"Error: RMS distance to a 100-step RK4 reference ({accuracy['reference_nfe']} evaluations) "
        "from the same noise, divided by the RMS of the reference samples.",
        "",
        "| precision | sampler | steps | evaluations | relative RMS error |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in accuracy["rows"]:
        lines.append(f"| {row['precision']} | {row['method']} | {row['n_steps']} | {row['nfe']} | {row['rel_rmse']:.4f} |")
    lines += ["", f"Default chosen by the script: the fp32 sampler with the fewest evaluations whose error is at "
              f"most that of 20 Euler steps: {method}, {n_steps} steps.", ""]

    lines += ["### Attention layer alone (8 heads, 381 tokens, head width 32, batch 32 unless stated)", "",
              "| operation | time |", "| --- | --- |"]
    for key, pair in results["ops"].items():
        lines.append(f"| {key.replace('_', ' ')} | {fmt(pair)} |")
    lines += ["", *floor_lines(results), ""]

    if results["scaling_genes"]:
        lines += ["### Scaling", "", "Training step (bf16) against the number of genes (first G genes of the list):", "",
                  "| genes | sets | time per step | peak RSS |", "| --- | --- | --- | --- |"]
        for n_genes, row in results["scaling_genes"].items():
            lines.append(f"| {int(n_genes):,} | {row['n_sets']} | {fmt((row['wall_s'], row['cpu_s']))} | "
                         f"{row['peak_rss_gb']:.1f} GiB |")
        lines += ["", f"Sampling (bf16, {method}, {n_steps} steps, guided) against the number of slides:", "",
                  "| slides | time | peak RSS |", "| --- | --- | --- |"]
        for n_slides, row in results["scaling_slides"].items():
            lines.append(f"| {n_slides} | {fmt((row['wall_s'], row['cpu_s']))} | {row['peak_rss_gb']:.1f} GiB |")
        lines.append("")

    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines))
    print("\n".join(lines))


def floor_lines(results):
    """Say how much of each target the attention kernels alone use, from the measured times."""
    ops = results["ops"]
    n_layers = PAPER["depth"] + 1  # the graph attention layer and the adaLN-Zero blocks
    # Training casts q, k and v to fp32 because the fp32 backward kernel is faster.
    train_floor = n_layers * ops["attention_forward_backward_float32"][0]
    eval_floor = n_layers * ops["attention_forward_bfloat16_batch_64"][0]
    method, n_steps = results["default"]
    default_nfe = results["sample"][f"bf16 {method} {n_steps}"]["nfe"]
    return [
        "What bounds the speed: the network has "
        f"{n_layers} attention layers over 381 tokens, and PyTorch's CPU attention kernel at head width 32 "
        "runs far below the matrix-product peak. From the times above, attention alone takes "
        f"{train_floor:.2f} s of each training step (target 1.5 s). It takes {eval_floor:.2f} s of each "
        f"guided evaluation: {20 * eval_floor:.1f} s of 20 Euler steps (target 12 s) and "
        f"{default_nfe * eval_floor:.1f} s of the default sampler (target 5 s). The matrix products, "
        "norms and activations come on top of that.",
    ]


if __name__ == "__main__":
    main()
