#!/usr/bin/env python3
"""Turns the benchmark suite's JSON (medians) into results/bench.md (the README's table) and results/bench.svg.

Usage: bench_report.py bench.json OUTPUT_DIR. Standard library only; the chart is drawn by gnuplot.
"""
import json
import math
import os
import subprocess
import sys
from collections import defaultdict

DIRECTIONS = ["forward", "backward_data", "backward_weights"]
IMPLEMENTATIONS = ["im2col", "direct", "onednn", "direct_naive"]
# The shapes the SGEMM-fraction targets are stated over (ResNet / VGG / LeNet); grouped, depthwise and batch-1
# shapes are reported but kept out of that mean.
TARGET_SHAPES = ["lenet1", "lenet2", "r50_c1", "r50_3x3a", "r50_1x1a", "r50_3x3b", "r50_3x3c", "r50_3x3d", "vgg_1_2"]


def load(path):
    with open(path) as f:
        data = json.load(f)
    medians = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name", "median") != "median":
            continue
        name = b.get("run_name", b["name"]).removesuffix("/real_time")
        medians[name] = b
    return data["context"], medians


def geomean(values):
    values = [v for v in values if v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def main():
    source, out_dir = sys.argv[1], sys.argv[2]
    context, medians = load(source)
    gflops = defaultdict(dict)  # (direction, shape) -> impl -> GFLOP/s
    workspace = {}
    shapes = []
    for name, b in medians.items():
        parts = name.split("/")
        if parts[0] != "conv":
            continue
        _, direction, impl, shape = parts
        gflops[(direction, shape)][impl] = b["GFLOPs"]
        if impl == "im2col":
            workspace[(direction, shape)] = b.get("workspace_bytes", 0)
        if shape not in shapes and impl == "im2col":
            shapes.append(shape)
    peak = medians["sgemm/2048"]["GFLOPs"]

    def roofline(row):
        return min(peak, row.get("memory_bound", peak))

    def shape_gemm(shape):
        gemm = medians.get(f"sgemm/{shape}")
        return f"{gemm['GFLOPs']:.1f}" if gemm else "-"

    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    lines = [
        f"Machine: {cpu}, {context.get('num_cpus')} threads; {context.get('blas', '?')} "
        f"(convgemm {context.get('convgemm', '?')}). SGEMM 2048^3 on all cores: **{peak:.0f} GFLOP/s**. "
        "Medians of 3 repetitions, GFLOP/s by the one FLOP formula 2*N*K*(C/G)*R*S*P*Q. "
        "*memory bound*: the FLOP rate of a call that only reads the operands and writes the result once; "
        "*roofline*: the lower of that and the SGEMM peak, the most any implementation can reach here. "
        "*shape's GEMM*: OpenBLAS on the GEMM the shape lowers to (the whole batch's forward product, no im2col), "
        "on all cores. *SGEMM before the direction's runs*: the same 2048^3 SGEMM timed again just before that "
        "direction's benchmarks, a check on a host whose load changes during the run.",
        "",
        "| shape | direction | im2col | direct | oneDNN | naive | memory bound | shape's GEMM | im2col/direct "
        "| im2col/oneDNN | of SGEMM peak | of roofline | workspace MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape in shapes:
        for direction in DIRECTIONS:
            row = gflops.get((direction, shape), {})
            if "im2col" not in row:
                continue
            ours = row["im2col"]

            def cell(impl):
                return f"{row[impl]:.1f}" if impl in row else "-"

            def ratio(impl):
                return f"{ours / row[impl]:.2f}x" if impl in row and row[impl] > 0 else "-"

            lines.append(
                f"| {shape} | {direction} | {ours:.1f} | {cell('direct')} | {cell('onednn')} | "
                f"{cell('direct_naive')} | {cell('memory_bound')} | {shape_gemm(shape)} | {ratio('direct')} | "
                f"{ratio('onednn')} | "
                f"{ours / peak:.2f} | {ours / roofline(row):.2f} | {workspace.get((direction, shape), 0) / 2**20:.2f} |")
    lines.append("")
    lines.append("| direction | geomean of SGEMM peak (ResNet/VGG/LeNet) | lowest 3x3/1x1 shape "
                 "| geomean of roofline | lowest of roofline | SGEMM before the direction's runs "
                 "| geomean of that |")
    lines.append("|---|---:|---|---:|---|---:|---:|")
    for direction in DIRECTIONS:
        rows = {s: gflops[(direction, s)] for s in TARGET_SHAPES if "im2col" in gflops.get((direction, s), {})}
        fractions = {s: row["im2col"] / peak for s, row in rows.items()}
        of_roofline = {s: row["im2col"] / roofline(row) for s, row in rows.items()}

        def lowest(values, among):
            worst = min((s for s in values if s in among), key=lambda s: values[s], default=None)
            return f"{worst} {values[worst]:.2f}" if worst else "-"

        # The same fractions against the SGEMM figure taken just before this direction's benchmarks ran.
        section_peak = medians.get(f"sgemm/2048/before_{direction}", {}).get("GFLOPs")
        section = (f"{section_peak:.0f} | {geomean(r['im2col'] / section_peak for r in rows.values()):.2f}"
                   if section_peak and rows else "- | -")
        lines.append(f"| {direction} | {geomean(fractions.values()):.2f} | "
                     f"{lowest(fractions, [s for s in fractions if s != 'r50_c1'])} | "
                     f"{geomean(of_roofline.values()):.2f} | {lowest(of_roofline, of_roofline)} | {section} |")
    bare = {s: medians[f"sgemm/{s}"]["GFLOPs"] / peak for s in TARGET_SHAPES if f"sgemm/{s}" in medians}
    if bare:
        lowest_bare = min(bare, key=bare.get)
        lines.append("")
        lines.append(f"The shapes' bare GEMMs (OpenBLAS, no im2col) reach a geomean of {geomean(bare.values()):.2f} "
                     f"of the SGEMM peak over the same shapes (lowest: {lowest_bare} {bare[lowest_bare]:.2f}).")
    batch1 = medians.get("conv/forward/im2col/r50_3x3b_n1")
    batch1_single = medians.get("conv/forward/im2col_1thread/r50_3x3b_n1")
    if batch1 and batch1_single:
        lines.append("")
        lines.append(f"Batch-1 r50_3x3b forward: {batch1_single['real_time'] / batch1['real_time']:.2f}x its "
                     f"1-thread time ({batch1['GFLOPs']:.0f} vs {batch1_single['GFLOPs']:.0f} GFLOP/s).")
    peak_workspace = max((v for v in workspace.values()), default=0)
    lines.append(f"Peak workspace over the suite: {peak_workspace / 2**20:.2f} MiB "
                 f"(vgg_1_2, the largest shape: "
                 f"{max(workspace.get((d, 'vgg_1_2'), 0) for d in DIRECTIONS) / 2**20:.2f} MiB).")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "bench.md"), "w") as f:
        f.write(table)
    print(table)

    # One panel per direction: GFLOP/s per shape, one bar per implementation.
    data_path = os.path.join(out_dir, "bench.dat")
    with open(data_path, "w") as f:
        for direction in DIRECTIONS:
            f.write(f"# {direction}: shape " + " ".join(IMPLEMENTATIONS) + "\n")
            for shape in shapes:
                row = gflops.get((direction, shape), {})
                f.write(shape + " " + " ".join(f"{row.get(i, 0):.2f}" for i in IMPLEMENTATIONS) + "\n")
            f.write("\n\n")
    plot = [
        "set terminal svg size 1400,1100 dynamic font 'sans,11'",
        "set termoption noenhanced",  # shape names contain underscores
        f"set output '{os.path.join(out_dir, 'bench.svg')}'",
        "set multiplot layout 3,1 title 'convgemm: GFLOP/s per shape (SGEMM 2048^3 peak dashed)'",
        "set style data histograms", "set style histogram clustered gap 1", "set style fill solid 0.8 border -1",
        "set boxwidth 0.9", "set xtics rotate by -30", "set ylabel 'GFLOP/s'", "set grid ytics",
        "set key top right",
    ]
    for index, direction in enumerate(DIRECTIONS):
        plot.append(f"set title '{direction}'")
        plot.append(
            f"plot '{data_path}' index {index} using 2:xtic(1) title 'im2col', '' index {index} using 3 title 'direct', "
            f"'' index {index} using 4 title 'oneDNN', '' index {index} using 5 title 'naive', "
            f"{peak} with lines dashtype 2 lc rgb 'black' title 'SGEMM peak'")
    plot.append("unset multiplot")
    subprocess.run(["gnuplot"], input="\n".join(plot), text=True, check=True)
    print(f"wrote {os.path.join(out_dir, 'bench.md')} and {os.path.join(out_dir, 'bench.svg')}")


if __name__ == "__main__":
    main()
