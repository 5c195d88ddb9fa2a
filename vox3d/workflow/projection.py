"""Projected hours to build Voxceleb-3D from VoxCeleb2 on cluster nodes (issue 9, item 3).

The numbers come from measured throughputs kept in ``vox3d/data/throughput.json`` (each with
its source and date): CPU stages per core from ``bench/throughput.py``
(``bench/results/cpu_throughput.txt``), GPU stages from the H100 benchmarks
(``bench/results/h100_fit.txt``, ``h100_train.txt``).  :func:`project` turns them into
hours per stage for ``N`` nodes of ``cores`` CPU cores and ``gpus`` GPUs each;
:func:`projection_markdown` renders the table the dataset card includes.

Model (stated in the rendered text too):

* CPU-bound, per shard, spread over every core of every node: extract (decode video;
  seconds of video per second per core), features (seconds of audio per second per core),
  and the fit stage's host side (reading the extracted frames back: frames per second per
  core);
* GPU-bound: fit's detection + crop + regression (frames per second per GPU);
* train: one job on one GPU (the paper preset's iterations at the measured it/s): it does
  not get faster with more nodes;
* ``core_efficiency`` scales the per-core numbers for a full node (shared memory bandwidth,
  turbo), ``node_efficiency`` the aggregate of N > 1 nodes (stragglers, scheduling);
* the shard stages are pipelined (a shard's fit runs while the next shards are extracted),
  so the shard phase takes the longest of its CPU hours and GPU hours; the sequential sum
  is given as the upper bound;
* ``stream=True`` (the default workflow, ``extract.keep_frames: false``): the stream stage
  hands each decoded frame to the fit in memory, so the fit reads nothing back
  (``fit_read_h`` is 0); decode and features keep the two-stage rates (the extract rate was
  measured on the job that also compresses and writes the frames, so it errs slow);
* I/O (shared file system, network), queue waits and the manifest's probing are not
  modelled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vox3d import paths

THROUGHPUT_JSON = paths.PACKAGE_DATA / "throughput.json"

#: measurement keys the projection needs, with the unit each must state
REQUIRED = {
    "extract_cpu": "s of video/s/core",
    "features_cpu": "s of audio/s/core",
    "fit_read_cpu": "frames/s/core",
    "fit_cpu": "frames/s/core",
    "train_cpu": "it/s/core",
    "fit_gpu": "frames/s/GPU",
    "regressor_gpu": "faces/s/GPU",
    "train_gpu": "it/s/GPU",
}


def load_throughput(path: str | Path | None = None) -> dict:
    """Read and validate the throughput file (default ``vox3d/data/throughput.json``)."""
    data = json.loads(Path(path or THROUGHPUT_JSON).read_text(encoding="utf-8"))
    validate_throughput(data)
    return data


def validate_throughput(data: dict) -> None:
    """Raise ValueError naming the first problem: every measurement of :data:`REQUIRED`
    present with a positive ``value``, its ``unit``, a ``source`` and an ISO ``date``;
    ``corpus`` (videos, utterances, identities, hours, frame_rate > 0), ``node`` (cores,
    gpus >= 1) and ``assumptions`` (efficiencies in (0, 1], train_steps >= 1)."""
    if not isinstance(data, dict):
        raise ValueError("throughput file: not a JSON object")
    meas = data.get("measurements")
    if not isinstance(meas, dict):
        raise ValueError("throughput file: 'measurements' missing")
    for key, unit in REQUIRED.items():
        m = meas.get(key)
        if not isinstance(m, dict):
            raise ValueError(f"measurement {key!r} missing")
        v = m.get("value")
        if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0:
            raise ValueError(f"measurement {key!r}: value {v!r} is not a positive number")
        if m.get("unit") != unit:
            raise ValueError(f"measurement {key!r}: unit {m.get('unit')!r}, expected {unit!r}")
        for f in ("source", "date"):
            if not isinstance(m.get(f), str) or not m[f].strip():
                raise ValueError(f"measurement {key!r}: {f!r} missing")
        d = m["date"]
        if len(d) != 10 or d[4] != "-" or d[7] != "-" or not (d[:4] + d[5:7] + d[8:]).isdigit():
            raise ValueError(f"measurement {key!r}: date {d!r} is not YYYY-MM-DD")
    for sect, keys in (
        ("corpus", ("videos", "utterances", "identities", "hours", "frame_rate")),
        ("node", ("cores", "gpus")),
    ):
        s = data.get(sect)
        if not isinstance(s, dict):
            raise ValueError(f"throughput file: {sect!r} missing")
        for k in keys:
            v = s.get(k)
            if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0:
                raise ValueError(f"{sect}.{k}: {v!r} is not a positive number")
    a = data.get("assumptions")
    if not isinstance(a, dict):
        raise ValueError("throughput file: 'assumptions' missing")
    for k in ("core_efficiency", "node_efficiency"):
        v = a.get(k)
        if not isinstance(v, int | float) or not 0 < v <= 1:
            raise ValueError(f"assumptions.{k}: {v!r} is not in (0, 1]")
    if not isinstance(a.get("train_steps"), int) or a["train_steps"] < 1:
        raise ValueError(f"assumptions.train_steps: {a.get('train_steps')!r}")


@dataclass(frozen=True)
class Projection:
    """Hours per stage for one cluster size (all values in hours of wall time)."""

    nodes: int
    extract_h: float  # CPU
    features_h: float  # CPU
    fit_read_h: float  # CPU: reading frames back for the GPU fit
    fit_gpu_h: float  # GPU: detection + crop + regression
    train_h: float  # one GPU, not parallel over nodes
    fit_cpu_only_h: float  # fit on the CPU cores instead (for comparison)
    regressor_only_h: float  # GPU regressor alone (lower bound of fit)

    @property
    def cpu_h(self) -> float:
        """CPU-bound hours of the shard phase."""
        return self.extract_h + self.features_h + self.fit_read_h

    @property
    def shard_phase_h(self) -> float:
        """Shard phase pipelined: the longer of its CPU and GPU hours."""
        return max(self.cpu_h, self.fit_gpu_h)

    @property
    def total_h(self) -> float:
        """Pipelined shard phase, then training."""
        return self.shard_phase_h + self.train_h

    @property
    def sequential_h(self) -> float:
        """Upper bound: every stage one after another."""
        return self.cpu_h + self.fit_gpu_h + self.train_h

    @property
    def bound(self) -> str:
        """Which resource bounds the shard phase: ``CPU`` or ``GPU``."""
        return "CPU" if self.cpu_h >= self.fit_gpu_h else "GPU"


def project(data: dict, nodes: int, stream: bool = False) -> Projection:
    """Hours per stage on ``nodes`` nodes (``data`` as :func:`load_throughput` returns);
    ``stream``: the stream stage, whose fit reads no frames back (module docstring)."""
    if nodes < 1:
        raise ValueError(f"nodes must be >= 1, got {nodes}")
    m = {k: float(v["value"]) for k, v in data["measurements"].items()}
    c, n, a = data["corpus"], data["node"], data["assumptions"]
    video_s = float(c["hours"]) * 3600.0
    frames = video_s * float(c["frame_rate"])
    eff_nodes = nodes * (1.0 if nodes == 1 else float(a["node_efficiency"]))
    cores = float(n["cores"]) * float(a["core_efficiency"]) * eff_nodes
    gpus = float(n["gpus"]) * eff_nodes
    return Projection(
        nodes=nodes,
        extract_h=video_s / (m["extract_cpu"] * cores) / 3600.0,
        features_h=video_s / (m["features_cpu"] * cores) / 3600.0,
        fit_read_h=0.0 if stream else frames / (m["fit_read_cpu"] * cores) / 3600.0,
        fit_gpu_h=frames / (m["fit_gpu"] * gpus) / 3600.0,
        train_h=float(a["train_steps"]) / m["train_gpu"] / 3600.0,
        fit_cpu_only_h=frames / (m["fit_cpu"] * cores) / 3600.0,
        regressor_only_h=frames / (m["regressor_gpu"] * gpus) / 3600.0,
    )


def _h(x: float) -> str:
    """Hours as printed: 1 decimal from 10 h, else 2; 0 as ``0``; below 0.005 h ``<0.01``."""
    if x == 0:
        return "0"
    if x < 0.005:
        return "<0.01"
    return f"{x:,.1f}" if x >= 10 else f"{x:,.2f}"


def projection_markdown(
    path: str | Path | None = None, nodes: tuple[int, ...] = (1, 4, 16, 64), stream: bool = False
) -> str:
    """Markdown: the projected hours to build VoxCeleb2 on 1, 4, 16, 64 nodes, the inputs
    (each measurement with its source and date) and the assumptions; ``stream``: for the
    stream stage (``extract.keep_frames: false``), else for the two-stage path."""
    data = load_throughput(path)
    c, n, a, m = data["corpus"], data["node"], data["assumptions"], data["measurements"]
    frames = float(c["hours"]) * 3600.0 * float(c["frame_rate"])
    ps = [project(data, k, stream) for k in nodes]
    out = [
        f"### Projected build time: {c['name']} "
        f"({c['videos']:,} videos, {c['utterances']:,} utterances, {c['identities']:,} "
        f"identities, {c['hours']:,} h of video = {frames:,.0f} frames at "
        f"{c['frame_rate']:g} fps)",
        "",
        f"Per node: {n['cores']} CPU cores + {n['gpus']} {n.get('gpu', 'GPU')}. "
        + (
            "Path: the stream stage (`extract.keep_frames: false`; each video decoded once, "
            "its frames fitted in memory, none read back). "
            if stream
            else "Path: two-stage (`extract.keep_frames: true`; the fit reads the stored "
            "frames back). "
        )
        + "Hours of wall time per stage:",
        "",
        "| stage | bound | " + " | ".join(f"{k} node{'s' if k > 1 else ''}" for k in nodes) + " |",
        "|---|---|" + "---:|" * len(nodes),
    ]
    rows = [
        ("extract (decode video)", "CPU", "extract_h"),
        ("features (log-mel)", "CPU", "features_h"),
        (
            "fit: read frames back" + (" (none: the stream stage)" if stream else ""),
            "CPU",
            "fit_read_h",
        ),
        ("fit: detect + crop + regress", "GPU", "fit_gpu_h"),
        ("shard phase, pipelined (max of CPU, GPU)", "", "shard_phase_h"),
        ("train (paper preset, one GPU)", "GPU", "train_h"),
        ("**total** (pipelined)", "", "total_h"),
        ("total, stages one after another", "", "sequential_h"),
    ]
    for name, bound, attr in rows:
        out.append(f"| {name} | {bound} | " + " | ".join(_h(getattr(p, attr)) for p in ps) + " |")
    out += [
        "",
        f"For comparison: fit on the CPU cores instead of the GPU would take "
        f"{_h(ps[0].fit_cpu_only_h)} h on one node; the GPU regressor alone (detection "
        f"free) {_h(ps[0].regressor_only_h)} h. The shard phase is "
        f"{ps[0].bound}-bound on one node.",
        "",
        "Assumptions: extract, features and reading the frames back for the fit are CPU-bound "
        "and spread over every core of every node (one single-threaded job per core); fit's "
        "detection, crop and regression are GPU-bound; a shard's fit runs while later shards "
        "are extracted (pipelined); training is one job on one GPU and does not speed up "
        f"with more nodes ({a['train_steps']:,} iterations). Parallel efficiency: "
        f"{a['core_efficiency']:g} for {n['cores']} jobs on a node against one core, "
        f"{a['node_efficiency']:g} across nodes (N > 1). Not modelled: I/O (shared file "
        "system, network), queue waits, the manifest's probing, evaluation and export.",
        "",
        "| input | value | source | date |",
        "|---|---:|---|---|",
    ]
    for k in REQUIRED:
        v = m[k]
        val = f"{v['value']:,.0f}" if v["value"] >= 100 else f"{v['value']:.3g}"
        out.append(f"| {k} | {val} {v['unit']} | {v['source']} | {v['date']} |")
    runs = data.get("node_runs") or []
    if runs:
        out += [
            "",
            "Measured end to end on GPU nodes (mp4 to fit shards; the stream stage's run "
            "includes the features; the per-core model above predicts more: its extract rate "
            "comes from the development machine, and decode workers on these nodes ran at "
            "about a third of it each):",
            "",
            "| run | s of video/s | hours for the corpus (extract + fit) | source |",
            "|---|---:|---:|---|",
        ]
        for r in runs:
            hours = float(c["hours"]) / float(r["value"])  # h of video / (s video / s wall)
            out.append(
                f"| {r['device']}: {r['what']} | {r['value']:,.0f} | {_h(hours)} | "
                f"{r['source']}, {r['date']} |"
            )
    return "\n".join(out) + "\n"
