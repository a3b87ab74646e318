"""``tokenhunt bench``: performance figures on this machine, side by side with what users would
otherwise run, in one run. Timings are figures, never asserted in tests.

Every measured step runs in its own Python process (``python -m pipeline.bench --step JSON``), so
its peak memory is its own: the parent samples the RSS of the step's whole process tree (the step
and any ingest workers) with psutil, and the step reports ``getrusage`` maxima. Times are taken
inside the step around the work itself (interpreter start-up and imports excluded; a parallel
ingest's worker start-up included). Each figure is the median of ``repeat`` runs.

Sections (see ``run``):

1. ingest throughput and peak RSS per source format (Graph sign-in NDJSON, Purview CSV, gateway
   JSON lines), quality gate off and on (the default ``warn``);
2. the same files through DuckDB ``read_json``/``read_csv`` -> ``COPY TO parquet`` and polars
   ``scan_ndjson``/``scan_csv`` -> ``sink_parquet``: no normalization, the practical ceiling;
3. token fingerprinting + decoding (what the ingest does: every row fingerprinted, each distinct
   token decoded once) against a per-row ``jwt.decode(..., verify_signature=False)`` loop, and
   signature verification of the distinct tokens;
4. the detection suite over the bench lake (30 days), per detection;
5. the nightly increment: one day into the 30-day lake against the same day into an empty lake;
6. a scaling curve at 1x, 2x and 4x the events: ingest and detection time per event, peak RSS.

Data: ``pipeline.benchdata`` (the sample scenario's tenant at scale, deterministic, cached under
``<out>/data``).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline import benchdata

DEFAULT_EVENTS = 200_000
DEFAULT_REPEAT = 3
DAYS = 30  # the lake the nightly increment and the detections run on
SCALING = (1, 2, 4)
PYJWT_SAMPLE = 30_000  # the per-row pyjwt loop runs on this many rows (its rate is what matters)
TOKEN_ROWS_MAX = 2_000_000  # requests read for the token figures (raw tokens in memory: ~1.3 KB each)
FORMATS = (
    ("graph_json", benchdata.SIGNINS_FILE, "Graph sign-ins (NDJSON)"),
    ("purview_csv", benchdata.PURVIEW_FILE, "Purview audit (CSV)"),
    ("gateway_jsonl", benchdata.GATEWAY_FILE, "gateway tokens (JSON lines)"),
)


@dataclass
class BenchConfig:
    events: int = DEFAULT_EVENTS
    out: Path = Path("bench_out")
    repeat: int = DEFAULT_REPEAT
    seed: int = 558
    scaling: tuple[int, ...] = SCALING
    workers: int | None = None  # ingest worker processes (None: the CPU count)
    sections: tuple[str, ...] = ("ingest", "tokens", "detect", "nightly", "scaling")
    keep_lakes: bool = False


# =========================================================================== measuring a step
@dataclass
class Measured:
    seconds: float  # median
    runs: list[float]
    peak_rss_mb: float  # the largest process-tree RSS seen in any run
    result: dict[str, Any] = field(default_factory=dict)  # the last run's own report


def _tree_rss(proc: Any) -> int:
    import psutil

    total = 0
    try:
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def run_step(step: dict[str, Any], timeout: float = 3600) -> tuple[dict[str, Any], float]:
    """Run one step in a fresh process; returns (its report, peak RSS of its process tree in MB)."""
    import psutil

    cmd = [sys.executable, "-m", "pipeline.bench", "--step", json.dumps(step)]
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            watched = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not done.is_set():
            peak = max(peak, _tree_rss(watched))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, errors = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, errors = proc.communicate()
        raise RuntimeError(f"bench step {step['kind']} timed out after {timeout:.0f} s") from None
    finally:
        done.set()
        sampler.join()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(errors.strip().splitlines()[-8:])
        raise RuntimeError(f"bench step {step['kind']} failed (exit {proc.returncode}):\n{tail}")
    report = json.loads(lines[-1])
    peak_mb = max(peak, report.get("maxrss_kb", 0) * 1024) / 2**20
    return report, round(peak_mb, 1)


def measure(step: dict[str, Any], repeat: int, before: Callable[[], None] | None = None) -> Measured:
    """The median of ``repeat`` runs of ``step`` (``before`` prepares each run, untimed)."""
    runs, peaks, report = [], [], {}
    for _ in range(max(1, repeat)):
        if before:
            before()
        report, peak = run_step(step)
        runs.append(report["seconds"])
        peaks.append(peak)
    return Measured(round(statistics.median(runs), 3), [round(r, 3) for r in runs], max(peaks), report)


# =========================================================================== the steps (child side)
def _maxrss_kb() -> int:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(own + kids)  # Linux: KB; the largest child (a worker) beside the step itself


def _step_ingest(spec: dict[str, Any]) -> dict[str, Any]:
    from pipeline import ingest_parallel
    from pipeline.ingest import ingest_paths
    from pipeline.lake import Lake

    lake = Lake(Path(spec["lake"]))
    options = {} if spec.get("workers") is None else {"ingest_workers": spec["workers"]}
    paths = [Path(p) for p in spec["paths"]]
    started = time.perf_counter()
    report = ingest_paths(lake, paths, quality_policy=spec.get("quality", "off"), options=options)
    ingest_parallel.shutdown()  # worker exit counted: a nightly run pays it too
    seconds = time.perf_counter() - started
    errors = [f"{f.path.name}: {f.message}" for f in report.files if f.status == "error"]
    if errors:
        raise RuntimeError("; ".join(errors))
    totals = report.totals()
    return {
        "seconds": seconds,
        "records": sum(f.records for f in report.files),
        "bytes": sum(p.stat().st_size for p in paths),
        "files": len(paths),
        "rows": {t: c.written for t, c in totals.items()},
        "quarantined": sum(c.quarantined for c in totals.values()),
        "quality": sorted({f.quality_status for f in report.files}),
    }


def _step_baseline(spec: dict[str, Any]) -> dict[str, Any]:
    path, out, engine = spec["path"], spec["out"], spec["engine"]
    csv_input = path.endswith(".csv")
    started = time.perf_counter()
    if engine == "duckdb":
        import duckdb

        con = duckdb.connect()
        reader = "read_csv" if csv_input else "read_json"
        con.execute(f"COPY (SELECT * FROM {reader}('{path}')) TO '{out}' (FORMAT parquet)")
        rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    else:
        import polars as pl

        frame = pl.scan_csv(path) if csv_input else pl.scan_ndjson(path)
        frame.sink_parquet(out)
        rows = None
    seconds = time.perf_counter() - started
    if rows is None:
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(out).metadata.num_rows
    os.unlink(out)
    return {"seconds": seconds, "rows": rows, "bytes": os.path.getsize(path)}


def _gateway_tokens(path: str, limit: int | None = None) -> list[str]:
    """The bearer token of every request in a gateway log, in order (in memory only)."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            value = json.loads(line).get("authorization", "")
            out.append(value[7:] if value.startswith("Bearer ") else value)
            if limit and len(out) >= limit:
                break
    return out


def _step_tokens(spec: dict[str, Any]) -> dict[str, Any]:
    """tokenhunt's token path vs pyjwt. The ingest's gateway path gives every request its token's
    fingerprint through a per-file memo (each distinct token hashed once), registers the raw token,
    and decodes each distinct token once; that is what is timed here, over every request."""
    from pipeline.tokens import RawTokenStore, decode_many, fingerprint

    rows = _gateway_tokens(spec["path"], limit=TOKEN_ROWS_MAX)
    if spec["engine"] == "pyjwt":
        import jwt

        sample = rows[: spec.get("sample") or len(rows)]
        started = time.perf_counter()
        for token in sample:
            jwt.decode(token, options={"verify_signature": False})
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "rows": len(sample), "rows_per_s": len(sample) / seconds}
    started = time.perf_counter()
    store = RawTokenStore()
    memo: dict[str, str] = {}
    fingerprints = []
    for token in rows:
        fp = memo.get(token)
        if fp is None:
            fp = memo[token] = store.add(token, fingerprint(token))
        fingerprints.append(fp)
    distinct = list(memo.values())
    decoded = decode_many([store.raw(fp) for fp in distinct])
    seconds = time.perf_counter() - started
    bad = sum(1 for d in decoded if d["parse_error"])
    return {"seconds": seconds, "rows": len(rows), "distinct": len(distinct), "parse_errors": bad,
            "rows_per_s": len(rows) / seconds}


def _step_verify(spec: dict[str, Any]) -> dict[str, Any]:
    """Signature checks of the distinct tokens against the registry (keys imported from the JWKS)."""
    from pipeline import keys
    from pipeline.lake import Lake
    from pipeline.tokens import fingerprint

    lake = Lake(Path(spec["lake"]))
    distinct = {fingerprint(t): t for t in _gateway_tokens(spec["path"])}
    verifier = keys.SignatureVerifier.from_lake(lake)
    started = time.perf_counter()
    results = verifier.check(distinct)
    seconds = time.perf_counter() - started
    statuses: dict[str, int] = {}
    for status, _ in results.values():
        statuses[status] = statuses.get(status, 0) + 1
    return {"seconds": seconds, "tokens": len(distinct), "statuses": statuses, "tokens_per_s": len(distinct) / seconds}


def _step_keys(spec: dict[str, Any]) -> dict[str, Any]:
    from pipeline import keys
    from pipeline.lake import Lake

    started = time.perf_counter()
    keys.import_keys(Lake(Path(spec["lake"])), [Path(spec["jwks"])])
    return {"seconds": time.perf_counter() - started}


def _step_detect(spec: dict[str, Any]) -> dict[str, Any]:
    from pipeline import detect
    from pipeline.engines.duckdb import connect
    from pipeline.lake import Lake

    lake = Lake(Path(spec["lake"]))
    tables = ("signins", "mail_events", "token_events")
    con = connect(lake)
    try:
        events = sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)
    finally:
        con.close()
    in_window = events
    if spec.get("since"):
        window = detect.resolve_window(spec["since"])
        min_date = detect.min_partition_date(window[0], detect.load_detections())
        con = connect(lake, min_date=min_date)
        try:
            in_window = sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)
        finally:
            con.close()
    started = time.perf_counter()
    result = detect.detect_lake(lake, since=spec.get("since"))
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "events": events,
        "events_in_window": in_window,
        "findings": len(result.findings),
        "errors": result.errors,
        "per_detection": {i: r.seconds for i, r in sorted(result.per_detection.items())},
    }


STEPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ingest": _step_ingest,
    "baseline": _step_baseline,
    "tokens": _step_tokens,
    "verify": _step_verify,
    "keys": _step_keys,
    "detect": _step_detect,
}


def _child(spec: dict[str, Any]) -> None:
    report = STEPS[spec["kind"]](spec)
    report["maxrss_kb"] = _maxrss_kb()
    print(json.dumps(report, default=str))


# =========================================================================== the benchmark
def machine() -> dict[str, Any]:
    import duckdb
    import polars
    import psutil
    import pyarrow

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu or platform.processor(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "polars": polars.__version__,
        "pyarrow": pyarrow.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _fresh(path: Path) -> Callable[[], None]:
    def reset() -> None:
        shutil.rmtree(path, ignore_errors=True)

    return reset


def _copy_lake(source: Path, target: Path) -> Callable[[], None]:
    def reset() -> None:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)

    return reset


def _rate(amount: float, seconds: float) -> float:
    return round(amount / seconds, 1) if seconds > 0 else 0.0


def dataset(config: BenchConfig, factor: int, log: Callable[[str], None]) -> tuple[Path, dict[str, Path]]:
    """The data for ``factor`` x events: 31 day folders and the first 30 days combined per format."""
    plan = benchdata.Plan(events=config.events * factor, days=DAYS + 1, seed=config.seed)
    started = time.perf_counter()
    folder = benchdata.generate(config.out / "data", plan)
    days = benchdata.day_dirs(folder)
    combined = {name: benchdata.combine(folder, days[:DAYS], name, folder / f"all-{name}") for _, name, _ in FORMATS}
    took = time.perf_counter() - started
    if took > 1:
        log(f"data {plan.key()}: ready in {took:.0f} s")
    return folder, combined


def run(config: BenchConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark; returns the document written to ``<out>/bench.json``."""
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "config": {**asdict(config), "out": str(config.out), "days": DAYS},
        "machine": machine(),
        "targets": TARGETS,
    }
    repeat = config.repeat
    folder, combined = dataset(config, 1, log)
    plan = json.loads((folder / "plan.json").read_text())
    doc["data"] = {"folder": str(folder), "plan": plan,
                   "bytes": {name: p.stat().st_size for name, p in combined.items()}}
    jwks = folder / benchdata.JWKS_FILE
    ingest_workers = config.workers

    if "ingest" in config.sections:
        rows = []
        for fmt, name, label in FORMATS:
            path = combined[name]
            lake = work / f"lake-{fmt}"
            log(f"ingest {label}: {path.stat().st_size / 2**20:.0f} MB x {repeat}")
            off = measure({"kind": "ingest", "lake": str(lake), "paths": [str(path)], "quality": "off",
                           "workers": ingest_workers}, repeat, _fresh(lake))
            warn = measure({"kind": "ingest", "lake": str(lake), "paths": [str(path)], "quality": "warn",
                            "workers": ingest_workers}, repeat, _fresh(lake))
            baseline = {"kind": "baseline", "path": str(path)}
            duck = measure({**baseline, "engine": "duckdb", "out": str(work / "duck.parquet")}, repeat)
            polars = measure({**baseline, "engine": "polars", "out": str(work / "polars.parquet")}, repeat)
            size, records = off.result["bytes"], off.result["records"]
            row = {
                "format": fmt, "label": label, "file_mb": round(size / 2**20, 1), "records": records,
                "bytes_per_record": round(size / max(records, 1)),
                "ingest": _ingest_figures(off, size, records),
                "ingest_quality_warn": _ingest_figures(warn, size, records),
                "duckdb": {"seconds": duck.seconds, "runs": duck.runs, "mb_per_s": _rate(size / 2**20, duck.seconds),
                           "peak_rss_mb": duck.peak_rss_mb},
                "polars": {"seconds": polars.seconds, "runs": polars.runs, "mb_per_s": _rate(size / 2**20, polars.seconds),
                           "peak_rss_mb": polars.peak_rss_mb},
            }
            row["ratio_vs_duckdb"] = round(duck.seconds / off.seconds, 2)
            row["ratio_vs_polars"] = round(polars.seconds / off.seconds, 2)
            row["ratio_vs_best"] = round(min(duck.seconds, polars.seconds) / off.seconds, 2)
            rows.append(row)
            shutil.rmtree(lake, ignore_errors=True)
        doc["ingest"] = rows

    if "tokens" in config.sections:
        gateway = str(combined[benchdata.GATEWAY_FILE])
        log("tokens: decode + fingerprint, pyjwt per row, signature checks")
        ours = measure({"kind": "tokens", "engine": "tokenhunt", "path": gateway}, repeat)
        theirs = measure({"kind": "tokens", "engine": "pyjwt", "path": gateway, "sample": PYJWT_SAMPLE}, repeat)
        keys_lake = work / "lake-keys"
        _fresh(keys_lake)()
        run_step({"kind": "keys", "lake": str(keys_lake), "jwks": str(jwks)})
        verify = measure({"kind": "verify", "lake": str(keys_lake), "path": gateway}, repeat)
        ours_rate = ours.result["rows"] / ours.seconds
        theirs_rate = theirs.result["rows"] / theirs.seconds
        doc["tokens"] = {
            "rows": ours.result["rows"], "distinct": ours.result["distinct"],
            "tokenhunt": {"seconds": ours.seconds, "runs": ours.runs, "rows_per_s": round(ours_rate),
                          "peak_rss_mb": ours.peak_rss_mb},
            "pyjwt_per_row": {"seconds": theirs.seconds, "rows": theirs.result["rows"], "rows_per_s": round(theirs_rate),
                              "peak_rss_mb": theirs.peak_rss_mb},
            "ratio": round(ours_rate / theirs_rate, 1),
            "verify": {"seconds": verify.seconds, "runs": verify.runs, "tokens": verify.result["tokens"],
                       "tokens_per_s": round(verify.result["tokens"] / verify.seconds),
                       "statuses": verify.result["statuses"], "peak_rss_mb": verify.peak_rss_mb},
        }

    lake30 = work / "lake-30d"
    if {"detect", "nightly"} & set(config.sections):
        days = benchdata.day_dirs(folder)
        log(f"building the {DAYS}-day lake (keys, then {DAYS} nightly files per source)")
        _fresh(lake30)()
        run_step({"kind": "keys", "lake": str(lake30), "jwks": str(jwks)})
        build, build_peak = run_step({"kind": "ingest", "lake": str(lake30), "workers": ingest_workers, "quality": "warn",
                                      "paths": [str(d / n) for d in days[:DAYS] for _, n, _ in FORMATS]})
        doc["lake"] = {"days": DAYS, "records": build["records"], "rows": build["rows"],
                       "build_seconds": round(build["seconds"], 1), "build_peak_rss_mb": build_peak}

    if "detect" in config.sections:
        target = work / "lake-detect"
        log(f"detections x {repeat}")
        det = measure({"kind": "detect", "lake": str(target)}, repeat, _copy_lake(lake30, target))
        doc["detect"] = {"events": det.result["events"], "seconds": det.seconds, "runs": det.runs,
                         "us_per_event": round(det.seconds / max(det.result["events"], 1) * 1e6, 3),
                         "findings": det.result["findings"], "errors": det.result["errors"],
                         "per_detection": det.result["per_detection"], "peak_rss_mb": det.peak_rss_mb}
        shutil.rmtree(target, ignore_errors=True)

    if "nightly" in config.sections:
        day = benchdata.day_dirs(folder)[DAYS]
        paths = [str(day / n) for _, n, _ in FORMATS]
        full, empty = work / "lake-increment-30d", work / "lake-increment-empty"
        log(f"nightly increment x {repeat}: one day into the {DAYS}-day lake and into an empty one")

        def empty_lake() -> None:
            _fresh(empty)()
            run_step({"kind": "keys", "lake": str(empty), "jwks": str(jwks)})

        step = {"kind": "ingest", "paths": paths, "quality": "warn", "workers": ingest_workers}
        on_full = measure({**step, "lake": str(full)}, repeat, _copy_lake(lake30, full))
        on_empty = measure({**step, "lake": str(empty)}, repeat, empty_lake)
        # what the nightly job then runs: detections since the new day (plus each one's lookback)
        since = day.name.split("=", 1)[1]
        window = measure({"kind": "detect", "lake": str(full), "since": since}, 1)
        doc["nightly"] = {
            "day": since, "records": on_full.result["records"],
            "into_30_day_lake": {"seconds": on_full.seconds, "runs": on_full.runs, "peak_rss_mb": on_full.peak_rss_mb},
            "into_empty_lake": {"seconds": on_empty.seconds, "runs": on_empty.runs, "peak_rss_mb": on_empty.peak_rss_mb},
            "ratio": round(on_full.seconds / on_empty.seconds, 2),
            "detect_since_new_day": {"seconds": window.seconds, "events_in_window": window.result["events_in_window"],
                                     "peak_rss_mb": window.peak_rss_mb},
        }
        shutil.rmtree(full, ignore_errors=True)
        shutil.rmtree(empty, ignore_errors=True)

    if "scaling" in config.sections:
        points = []
        for factor in config.scaling:
            data_folder, files = dataset(config, factor, log)
            lake = work / f"lake-x{factor}"
            paths = [str(files[n]) for _, n, _ in FORMATS]
            log(f"scaling {factor}x: ingest + detections x {repeat}")

            def keyed(lake: Path = lake) -> None:
                _fresh(lake)()
                run_step({"kind": "keys", "lake": str(lake), "jwks": str(data_folder / benchdata.JWKS_FILE)})

            ing = measure({"kind": "ingest", "lake": str(lake), "paths": paths, "quality": "off", "workers": ingest_workers},
                          repeat, keyed)
            target = work / f"lake-x{factor}-detect"
            det = measure({"kind": "detect", "lake": str(target)}, repeat, _copy_lake(lake, target))
            records = ing.result["records"]
            points.append({
                "factor": factor, "events": records, "mb": round(ing.result["bytes"] / 2**20, 1),
                "ingest": {"seconds": ing.seconds, "runs": ing.runs, "us_per_event": round(ing.seconds / records * 1e6, 2),
                           "peak_rss_mb": ing.peak_rss_mb},
                "detect": {"seconds": det.seconds, "runs": det.runs, "events": det.result["events"],
                           "us_per_event": round(det.seconds / max(det.result["events"], 1) * 1e6, 3),
                           "peak_rss_mb": det.peak_rss_mb},
            })
            for path in (lake, target):
                if not config.keep_lakes:
                    shutil.rmtree(path, ignore_errors=True)
        base = points[0]
        for p in points:
            p["ingest"]["vs_1x"] = round(p["ingest"]["us_per_event"] / base["ingest"]["us_per_event"], 2)
            p["detect"]["vs_1x"] = round(p["detect"]["us_per_event"] / base["detect"]["us_per_event"], 2)
        doc["scaling"] = points

    if not config.keep_lakes:
        shutil.rmtree(lake30, ignore_errors=True)
    doc["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["elapsed_s"] = round(time.perf_counter() - started, 1)
    doc["verdicts"] = verdicts(doc)
    doc["tenant_estimate"] = tenant_estimate(doc)
    (out / "bench.json").write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    (out / "bench.md").write_text(render(doc), encoding="utf-8")
    return doc


def _ingest_figures(m: Measured, size: int, records: int) -> dict[str, Any]:
    return {
        "seconds": m.seconds, "runs": m.runs, "mb_per_s": _rate(size / 2**20, m.seconds),
        "records_per_s": round(records / m.seconds) if m.seconds else 0, "peak_rss_mb": m.peak_rss_mb,
        "quality": m.result.get("quality"),
    }


# =========================================================================== targets and reading
TARGETS = {
    "ingest_vs_baseline": ">= 0.7x the faster of DuckDB and polars raw JSON/CSV -> Parquet (quality gate off)",
    "ingest_peak_rss_mb": "<= 2048 whatever the input size",
    "token_decode_vs_pyjwt": ">= 40x the per-row pyjwt loop",
    "verify_tokens_per_s": ">= 20000 distinct tokens/s on 2 cores",
    "detect_10m_events_s": "< 20 s for 10 M events (a straight line through the scaling points, extended)",
    "detect_linear": "time per event at 4x within 1.3x of 1x",
    "nightly_ratio": "increment on the 30-day lake within 1.5x of the same increment on an empty lake",
}


def verdicts(doc: dict[str, Any]) -> dict[str, Any]:
    """Each target: the measured figure and whether it is met (None when the section did not run)."""
    out: dict[str, Any] = {}
    if "ingest" in doc:
        out["ingest_vs_baseline"] = {r["format"]: {"ratio": r["ratio_vs_best"], "met": r["ratio_vs_best"] >= 0.7}
                                     for r in doc["ingest"]}
        peaks = [r[k]["peak_rss_mb"] for r in doc["ingest"] for k in ("ingest", "ingest_quality_warn")]
        peaks += [p["ingest"]["peak_rss_mb"] for p in doc.get("scaling", [])]
        out["ingest_peak_rss_mb"] = {"max": max(peaks), "met": max(peaks) <= 2048}
    if "tokens" in doc:
        t = doc["tokens"]
        out["token_decode_vs_pyjwt"] = {"ratio": t["ratio"], "met": t["ratio"] >= 40}
        out["verify_tokens_per_s"] = {"rate": t["verify"]["tokens_per_s"], "met": t["verify"]["tokens_per_s"] >= 20_000}
    if doc.get("scaling"):
        fixed, per_event = fit([(p["detect"]["events"], p["detect"]["seconds"]) for p in doc["scaling"]])
        projected = fixed + per_event * 10_000_000
        out["detect_10m_events_s"] = {"projected_s": round(projected, 1), "fixed_s": round(fixed, 2),
                                      "us_per_event": round(per_event * 1e6, 3),
                                      "largest_measured": doc["scaling"][-1]["detect"]["events"], "met": projected < 20}
        worst = max(p["detect"]["vs_1x"] for p in doc["scaling"])
        out["detect_linear"] = {"worst_vs_1x": worst, "met": worst <= 1.3}
    if "nightly" in doc:
        out["nightly_ratio"] = {"ratio": doc["nightly"]["ratio"], "met": doc["nightly"]["ratio"] <= 1.5}
    return out


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (fixed seconds, seconds per event) through (events, seconds) points."""
    if len(points) < 2:
        events, seconds = points[0]
        return 0.0, seconds / max(events, 1)
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else mean_y / max(mean_x, 1)
    return max(0.0, mean_y - slope * mean_x), max(slope, 0.0)


LOOKBACK_DAYS = 22  # the nightly detections read the new day plus the largest lookback (21 days)


def tenant_estimate(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Nightly minutes for tenants of a given size, from the measured costs on this machine.

    Ingest: a straight line (fixed + per event) through the scaling curve's ingest points, for one
    day of events; detections: the same through the detection points, over the events of the
    window the nightly job reads (the new day plus the largest lookback, ``LOOKBACK_DAYS``).
    """
    if not doc.get("scaling"):
        return []
    ingest_fixed, ingest_per = fit([(p["events"], p["ingest"]["seconds"]) for p in doc["scaling"]])
    detect_fixed, detect_per = fit([(p["detect"]["events"], p["detect"]["seconds"]) for p in doc["scaling"]])
    out = []
    for per_day in (100_000, 1_000_000, 5_000_000, 20_000_000):
        ingest_s = ingest_fixed + ingest_per * per_day
        detect_s = detect_fixed + detect_per * per_day * LOOKBACK_DAYS
        out.append({"events_per_day": per_day, "ingest_min": round(ingest_s / 60, 1),
                    "detect_min": round(detect_s / 60, 1), "nightly_min": round((ingest_s + detect_s) / 60, 1)})
    return out


def _met(flag: bool | None) -> str:
    return "-" if flag is None else ("met" if flag else "MISSED")


def render(doc: dict[str, Any]) -> str:
    """The figures as one Markdown document (also what the CLI prints)."""
    m = doc["machine"]
    lines = [
        f"tokenhunt bench: {doc['config']['events']:,} events, median of {doc['config']['repeat']} runs, "
        f"{m['cores']} cores, {m['memory_gb']} GB ({m['cpu']}); load average {m['load_average_at_start'][0]} at start, "
        f"{m.get('load_average_at_end', ['?'])[0]} at end; {doc.get('elapsed_s', '?')} s in all",
        "",
    ]
    v = doc.get("verdicts", {})
    if "ingest" in doc:
        lines += [
            "| ingest (one file, one batch) | MB | records | tokenhunt MB/s | records/s | peak RSS MB "
            "| with quality gate MB/s | DuckDB MB/s | polars MB/s | tokenhunt / DuckDB | tokenhunt / polars |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in doc["ingest"]:
            i, q = r["ingest"], r["ingest_quality_warn"]
            lines.append(
                f"| {r['label']} ({r['bytes_per_record']} B/record) | {r['file_mb']} | {r['records']:,} | {i['mb_per_s']} "
                f"| {i['records_per_s']:,} | {i['peak_rss_mb']:.0f} (gate: {q['peak_rss_mb']:.0f}) | {q['mb_per_s']} "
                f"| {r['duckdb']['mb_per_s']} | {r['polars']['mb_per_s']} | {r['ratio_vs_duckdb']}x "
                f"| {r['ratio_vs_polars']}x |"
            )
        lines.append("")
    if "tokens" in doc:
        t = doc["tokens"]
        lines += [
            "| tokens | figure |",
            "|---|---|",
            f"| fingerprint every row + decode each distinct token ({t['rows']:,} rows, {t['distinct']:,} distinct) "
            f"| {t['tokenhunt']['rows_per_s']:,} rows/s |",
            f"| per-row `jwt.decode(verify_signature=False)` | {t['pyjwt_per_row']['rows_per_s']:,} rows/s "
            f"(tokenhunt {t['ratio']}x) |",
            f"| signature verification, distinct tokens | {t['verify']['tokens_per_s']:,} tokens/s "
            f"({t['verify']['tokens']:,} tokens: {t['verify']['statuses']}) |",
            "",
        ]
    if "detect" in doc:
        d = doc["detect"]
        per = ", ".join(f"{k} {s:.2f}" for k, s in sorted(d["per_detection"].items(), key=lambda kv: -kv[1]))
        lines += [
            f"Detection suite over the {DAYS}-day lake ({d['events']:,} events): {d['seconds']} s "
            f"({d['us_per_event']} us/event), {d['findings']} findings, peak RSS {d['peak_rss_mb']:.0f} MB. "
            f"Per detection (s, run 4 at a time): {per}.",
            "",
        ]
    if "nightly" in doc:
        n = doc["nightly"]
        lines += [
            f"Nightly increment ({n['day']}, {n['records']:,} records in 3 files, quality gate on): "
            f"{n['into_30_day_lake']['seconds']} s into the {DAYS}-day lake vs {n['into_empty_lake']['seconds']} s into "
            f"an empty lake: {n['ratio']}x. Then the detections since that day read "
            f"{n['detect_since_new_day']['events_in_window']:,} events: {n['detect_since_new_day']['seconds']} s.",
            "",
        ]
    if doc.get("scaling"):
        lines += [
            "| scaling | events | MB | ingest s | ingest us/event | ingest peak RSS MB | detect s | detect us/event "
            "| detect peak RSS MB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for p in doc["scaling"]:
            i, d = p["ingest"], p["detect"]
            lines.append(
                f"| {p['factor']}x | {p['events']:,} | {p['mb']} | {i['seconds']} | {i['us_per_event']} ({i['vs_1x']}x) "
                f"| {i['peak_rss_mb']:.0f} | {d['seconds']} | {d['us_per_event']} ({d['vs_1x']}x) | {d['peak_rss_mb']:.0f} |"
            )
        lines.append("")
    if v:
        lines += ["| target | measured | |", "|---|---|---|"]
        for name, text in TARGETS.items():
            if name not in v:
                continue
            got = v[name]
            if name == "ingest_vs_baseline":
                figure = ", ".join(f"{k} {x['ratio']}x" for k, x in got.items())
                met = all(x["met"] for x in got.values())
            else:
                figure = ", ".join(f"{k} {x}" for k, x in got.items() if k != "met")
                met = got["met"]
            lines.append(f"| {text} | {figure} | {_met(met)} |")
        lines.append("")
    if doc.get("tenant_estimate"):
        lines += [f"| events per day | ingest min | detections min (window: {LOOKBACK_DAYS} days) | nightly min |",
                  "|---|---|---|---|"]
        for e in doc["tenant_estimate"]:
            lines.append(f"| {e['events_per_day']:,} | {e['ingest_min']} | {e['detect_min']} | {e['nightly_min']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.bench --step JSON`` runs one measured step (used by ``run``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--step":
        _child(json.loads(args[1]))
        return 0
    print("usage: tokenhunt bench [--events N] [--out DIR]  (python -m pipeline.bench --step JSON is internal)")
    return 2


if __name__ == "__main__":
    sys.exit(main())
