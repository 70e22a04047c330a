"""`make bench-scaling`: what N Horovod workers would give, from a ring-allreduce cost model fed with
numbers measured here, and the model checked against the 1- and 2-worker runs this machine can do.

The model (one step of every worker; batch B per worker, k backward passes per allreduce):

    t_compute   = B * c                        c: measured seconds per sample of one worker's
                                                  forward + backward + update (all its cores)
    t_allreduce = 2 (N-1)/N * G / bw  +  2 (N-1) * latency
                                               G: gradient bytes, 4 per parameter (2 with fp16);
                                               a ring sends and receives 2 (N-1)/N of G per worker
    t_step      = t_compute + t_allreduce / k   (no overlap: train.overlap false)
                  - min(transfer / k, 2/3 t_compute)   (overlap, at best: the transfer hidden
                                                        behind the backward pass, ~2/3 of the
                                                        compute; the latency terms stay)
    samples/s   = N * B / t_step;   efficiency = t_compute / t_step

Networks: 10, 25 and 100 Gbit/s at 80% of line rate (TCP and gloo's framing), 30 us per ring
hop (a switched data-centre network); both are flags.  The check predicts the 2-worker run on
this machine's loopback from the compute measured at half the cores (the two workers split
them) and a 2-process Horovod allreduce of the model's gradient bytes, then measures it.

    python -m benchmarks.scaling [--conf conf/mnist.yaml] [--no-check] [--check-rows 7680]
"""
import argparse
import dataclasses
import json
import os
import subprocess
import sys

from benchmarks.report_file import write_report
from pipelines.core.log_output import lines_to
from pipelines.training.step import describe

MODELS = {  # name -> (input shape, batch measured here, measured steps, batch per worker in the model)
    "mnist_cnn": ((28, 28, 1), 128, 8, 128),
    "vgg_bn": ((28, 28, 1), 128, 6, 128),
    "resnet50": ((224, 224, 3), 16, 3, 64),      # 64 per worker: Horovod's own ResNet benchmarks' batch
}
BACKWARD_SHARE = 2 / 3     # of a step's compute: what an overlapped allreduce can hide behind
WORKERS = (2, 4, 8, 16, 32, 64)
GBITS = (10, 25, 100)


def probe(*args):
    out = subprocess.run([sys.executable, "-m", "benchmarks.scaling_probe", *map(str, args)],
                         capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if out.returncode != 0:
        raise SystemExit(f"benchmarks.scaling_probe {' '.join(map(str, args))} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def allreduce_seconds(n: int, grad_bytes: float, bytes_per_second: float, latency: float) -> float:
    """Ring allreduce: 2(N-1) hops, each moving G/N bytes each way."""
    if n < 2:
        return 0.0
    return 2 * (n - 1) / n * grad_bytes / bytes_per_second + 2 * (n - 1) * latency


def predict(seconds_per_sample: float, batch: int, grad_bytes: float, n: int, bytes_per_second: float,
            latency: float, passes: int = 1, overlap: bool = False) -> dict:
    """overlap: the transfer runs during the backward pass (BACKWARD_SHARE of the compute), an upper
    bound of what train.overlap gains.  The latency is never hidden: the last gradients exist only when
    the backward pass ends, and their reduction still takes its hops (and a Horovod cycle) after it."""
    t_compute = batch * seconds_per_sample
    t_latency = allreduce_seconds(n, 0.0, bytes_per_second, latency) / passes
    t_transfer = allreduce_seconds(n, grad_bytes, bytes_per_second, 0.0) / passes
    hidden = min(t_transfer, BACKWARD_SHARE * t_compute) if overlap else 0.0
    t_step = t_compute + t_latency + t_transfer - hidden
    return {"samples_per_second": n * batch / t_step, "efficiency": t_compute / t_step}


def table(name, measured, args, speedup=1.0):
    c, batch, params = measured["seconds_per_sample"] / speedup, MODELS[name][3], measured["params"]
    source = (f"measured on {measured['threads']} cores here" if speedup == 1 else
              f"this machine's / {speedup:g}")
    lines = [f"\n{name}: {params:,} parameters ({params * 4 / 1e6:.1f} MB of float32 gradients), "
             f"batch {batch}/worker, {c * 1e3:.3f} ms/sample ({source}) = {1 / c:,.0f} samples/s per worker",
             "  " + f"{'workers':>8}" + "".join(f" | {g:>3} Gbit/s: samples/s  eff  ovl ovl+fp16" for g in GBITS)]
    for n in WORKERS:
        cells = []
        for g in GBITS:
            bw = g * 1e9 / 8 * args.line_rate
            lat = args.latency_us * 1e-6
            p32 = predict(c, batch, params * 4, n, bw, lat)
            ovl = predict(c, batch, params * 4, n, bw, lat, overlap=True)
            o16 = predict(c, batch, params * 2, n, bw, lat, overlap=True)
            cells.append(f" | {p32['samples_per_second']:>21,.0f} {p32['efficiency']:4.0%} {ovl['efficiency']:4.0%}"
                         f" {o16['efficiency']:8.0%}")
        lines.append("  " + f"{n:>8}" + "".join(cells))
    return "\n".join(lines)


def check(cfg, rows, epochs, probes):
    """Predicted vs measured on this machine: 1 worker (all cores) and 2 workers (half each) on loopback."""
    from benchmarks.spine import horovod_spec, measure_horovod
    from pipelines.core.session import build_spark
    from pipelines.training.remote import CPU_CYCLE_TIME_MS
    spark = build_spark(cfg.spark)
    cores = os.cpu_count()
    grad_bytes = probes["mnist_cnn"]["params"] * 4
    cycle = cfg.train.cycle_time_ms or CPU_CYCLE_TIME_MS
    # Latency at the training's cycle (a 4-byte allreduce: the cycle dominates it); bandwidth from 8x
    # the gradient at a 1 ms cycle, where the transfer dominates.
    net = probe("allreduce", grad_bytes, 20, cycle)
    wide = probe("allreduce", grad_bytes * 8, 10, 1.0)
    half = probe("compute", "mnist_cnn", 28, 28, 1, cfg.train.batch_size, max(1, cores // 2), 8)
    latency = net["latency_seconds"] / 2      # 2 ring hops with 2 workers (a Horovod cycle's wait included)
    bw = wide["bytes"] / max(wide["payload_seconds"] - wide["latency_seconds"], 1e-6)   # 2(N-1)/N = 1 for N = 2
    measured = {}
    for workers in (1, 2):
        settings = dataclasses.replace(cfg.train, epochs=epochs, num_proc=workers)
        m = measure_horovod(spark, horovod_spec(cfg, settings, rows), workers)
        measured[workers] = {"samples_per_second": m["samples_per_second"], "ms_per_step": m["breakdown"]["ms_per_step"]}
    passes = cfg.train.backward_passes_per_step
    batch = cfg.train.batch_size
    overlap = cfg.train.overlap
    predicted = {1: predict(probes["mnist_cnn"]["seconds_per_sample"], batch, grad_bytes, 1, bw, latency),
                 2: predict(half["seconds_per_sample"], batch, grad_bytes, 2, bw, latency, passes, overlap)}
    return {"loopback": {"bytes_per_second": bw, "latency_seconds": latency, "cycle_ms": cycle, "bandwidth_probe": wide,
                         **net},
            "compute_half_cores": half, "predicted": predicted, "measured": measured, "passes": passes}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conf", default="conf/mnist.yaml")
    ap.add_argument("--latency-us", type=float, default=30.0, help="per ring hop")
    ap.add_argument("--line-rate", type=float, default=0.8, help="share of the link's bit rate gloo achieves")
    ap.add_argument("--speedup", type=float, default=50.0, help=(
        "the what-if tables: workers this many times faster than this machine (a GPU worker: measure yours "
        "and pass --compute-ms instead)"))
    ap.add_argument("--compute-ms", action="append", default=[], metavar="MODEL=MS",
                    help="your workers' measured ms per sample for MODEL (forward+backward+update), replacing ours")
    ap.add_argument("--no-check", action="store_true", help="no 1/2-worker runs on this machine")
    ap.add_argument("--check-rows", type=int, default=7680)
    ap.add_argument("--check-epochs", type=int, default=3)
    args = ap.parse_args(argv)
    from pipelines.stages import load_config
    cfg = load_config(args.conf)
    cores = os.cpu_count()
    probes = {name: probe("compute", name, *shape, batch, cores, steps)
              for name, (shape, batch, steps, _) in MODELS.items()}
    for item in args.compute_ms:
        name, _, ms = item.partition("=")
        if name not in probes or not ms:
            raise SystemExit(f"--compute-ms {item!r}: expected MODEL=MS with MODEL one of {', '.join(MODELS)}")
        probes[name] = dict(probes[name], seconds_per_sample=float(ms) / 1e3, threads="your")
    print(f"COST MODEL (ring allreduce; {args.line_rate:.0%} of line rate, {args.latency_us:g} us per hop; "
          "eff = t_compute / t_step without overlap; ovl: the transfer hidden behind the backward pass "
          f"({BACKWARD_SHARE:.0%} of compute) at best; ovl+fp16: and gradients sent as float16)")
    for name, measured in probes.items():
        print(table(name, measured, args))
    if args.speedup != 1:
        print(f"\nWHAT IF the workers were {args.speedup:g}x this machine (GPU-class compute, same model and batch):")
        for name, measured in probes.items():
            print(table(name, measured, args, args.speedup))
    report = {"probes": probes, "latency_us": args.latency_us, "line_rate": args.line_rate}
    if not args.no_check:
        result = check(cfg, args.check_rows, args.check_epochs, probes)
        report["check"] = result
        lb = result["loopback"]
        print(f"\nCHECK on this machine ({cores} cores, loopback: {lb['bytes_per_second'] / 1e9:.2f} GB/s, "
              f"{lb['latency_seconds'] * 1e3:.1f} ms per hop at a {lb['cycle_ms']:g} ms Horovod cycle, from 2-process "
              f"Horovod allreduces of 4 bytes and {lb['bandwidth_probe']['bytes'] / 1e6:.1f} MB), mnist_cnn batch {cfg.train.batch_size}/worker, "
              f"{result['passes']} backward pass(es) per allreduce:")
        for w in (1, 2):
            p, m = result["predicted"][w], result["measured"][w]
            print(f"  {w} worker(s): predicted {p['samples_per_second']:6.0f} samples/s, measured "
                  f"{m['samples_per_second']:6.0f} ({m['samples_per_second'] / p['samples_per_second']:.2f}x of "
                  f"predicted); {describe(m['ms_per_step'], digits=0)}")
        print(f"  compute at {result['compute_half_cores']['threads']} core(s) per worker: "
              f"{result['compute_half_cores']['seconds_per_sample'] * 1e3:.3f} ms/sample vs "
              f"{probes['mnist_cnn']['seconds_per_sample'] * 1e3:.3f} at {cores}")
    from pipelines.core.store import RunStore
    write_report(os.path.join(RunStore(cfg.run_dir).root, "bench-scaling.json"), report,
                 "make bench-scaling   (python -m benchmarks.scaling)")


if __name__ == "__main__":
    with lines_to(sys.stdout):         # the trainings' lines, as the CLI prints them
        main()
