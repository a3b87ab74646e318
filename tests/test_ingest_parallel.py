"""The parallel ingest and the gateway's block fast path give exactly what the serial ingest gives.

Why these tests: ``pipeline.ingest_parallel`` cuts large files into blocks for worker processes and
``gateway.normalize_many`` normalizes whole blocks with memoized values; both promise the rows,
quarantine records, counts and derived ``tokens`` rows of the record-at-a-time path. The same
inputs (with bad lines, duplicates, pages, gzip, quoted CSV cells) go through all three paths with
small flush chunks, so flushes fall inside blocks, and the lakes must hold the same rows.
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline import benchdata, ingest, ingest_parallel, schemas, sources
from pipeline.ingest import ingest_paths, judge
from pipeline.lake import Lake
from pipeline.sources import gateway, graph
from pipeline.sources.base import Context, RawRecord

VOLATILE = {"ingest_batch_id", "quarantined_at", "started_at", "committed_at", "run_id", "quality"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Bench-generator files (two days) plus the awkward cases each reader must number alike."""
    root = tmp_path_factory.mktemp("inputs")
    folder = benchdata.generate(root / "data", benchdata.Plan(events=6000, days=2), workers=1)
    day = benchdata.day_dirs(folder)[0]
    files = [day / name for name in benchdata.DAY_FILES]
    lines = (day / benchdata.GATEWAY_FILE).read_text(encoding="utf-8").splitlines()
    rng = random.Random(5)
    odd = lines[:400] + lines[100:130]  # overlapping requests: duplicates within the file
    odd.insert(50, "{not json")
    odd.insert(60, "")  # blank line: no record number
    no_request_id = {"time": "2026-10-20T01:00:00Z", "authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"}
    odd.insert(70, json.dumps(no_request_id))
    odd.insert(80, '["an array"]')
    rec = json.loads(lines[3])
    rec.update(Host="UPPER.example.com", status="404", client_ip="10.0.0.1:8443, 10.0.0.2")
    odd.insert(90, json.dumps(rec))  # case variant and strings: the per-record path
    odd.insert(95, json.dumps({**json.loads(lines[4]), "time": "2026-02-30T00:00:00Z"}))  # impossible date
    rng.shuffle(odd[200:300])
    gw = root / "gateway-odd.jsonl"
    gw.write_text("\n".join(odd) + "\n", encoding="utf-8")
    files.append(gw)
    gz = root / "gateway-odd.jsonl.gz"
    gz.write_bytes(gzip.compress(gw.read_bytes()))
    files.append(gz)
    cut = root / "gateway-cut.jsonl.gz"  # a gzip stream that breaks mid-file
    data = gzip.compress(gw.read_bytes())
    cut.write_bytes(data[: len(data) // 2])
    files.append(cut)
    graph_lines = (day / benchdata.SIGNINS_FILE).read_text(encoding="utf-8").splitlines()[:120]
    page = json.dumps({"value": [json.loads(x) for x in graph_lines[:5]]})
    pages = root / "graph-pages.ndjson"  # one page a line, plain records, a bad line
    pages.write_text("\n".join([page, *graph_lines[5:60], "{broken", *graph_lines[50:70]]) + "\n", encoding="utf-8")
    files.append(pages)
    csv_lines = (day / benchdata.PURVIEW_FILE).read_bytes().decode("utf-8").split("\r\n")
    header, rows = csv_lines[0], [r for r in csv_lines[1:] if r]
    multi = rows[2][:-1] + '"two\r\nlines"'  # a quoted cell over two lines (the last, empty column)
    purview = root / "purview-odd.csv"
    purview.write_text("\r\n".join([header, *rows[:150], header, "a,b", multi, *rows[100:160]]) + "\r\n", encoding="utf-8")
    files.append(purview)
    return files


def _lake_rows(lake: Lake) -> dict[str, list[str]]:
    out = {}
    for table in schemas.all_tables():
        rows = []
        for row in lake.read_table(table).to_pylist():
            row = {k: v for k, v in row.items() if k not in VOLATILE}
            if table in ("quarantine", "ingest_runs"):
                row.pop("event_date", None)
                row.pop("counts", None)
            rows.append(json.dumps(row, sort_keys=True, default=str))
        out[table] = sorted(rows)
    return out


def _ingest(tmp: Path, files: list[Path], workers: int, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list]:
    monkeypatch.setattr(ingest, "CHUNK_ROWS", 700)  # flushes inside blocks
    monkeypatch.setattr(ingest_parallel, "CHUNK_ROWS", 700)
    monkeypatch.setattr(ingest_parallel, "BLOCK_BYTES", 256 * 1024)
    monkeypatch.setenv("TOKENHUNT_PARALLEL_MIN_BYTES", "0")
    lake = Lake(tmp / f"lake-{workers}")
    report = ingest_paths(lake, files, quality_policy="off", options={"ingest_workers": workers})
    summary = [(f.path.name, f.status, f.format, f.records, f.skipped, {t: vars(c) for t, c in sorted(f.counts.items())},
                f.message) for f in report.files]
    return _lake_rows(lake), summary


def test_blocks_and_workers_give_the_serial_lake(tmp_path: Path, inputs: list[Path], monkeypatch: pytest.MonkeyPatch):
    serial_rows, serial_summary = _ingest(tmp_path, inputs, 0, monkeypatch)
    assert any(s[5].get("token_events", {}).get("quarantined") for s in serial_summary)  # the odd lines did quarantine
    assert any(s[5].get("token_events", {}).get("duplicates") for s in serial_summary)
    for workers in (1, 2):
        rows, summary = _ingest(tmp_path, inputs, workers, monkeypatch)
        assert summary == serial_summary, f"workers={workers}: per-file counts differ"
        for table, expected in serial_rows.items():
            assert rows[table] == expected, f"workers={workers}: table {table} differs"


def test_plan_reads_only_the_layouts_it_knows(tmp_path: Path):
    array = tmp_path / "array.json"
    array.write_text("[" + ",".join(['{"time": "2026-01-01T00:00:00Z", "authorization": "Bearer a.b.c"}'] * 3) + "]")
    fmt = sources.by_name("gateway_jsonl")
    sample = sources.base.sniff_container(array)
    assert ingest_parallel.layout_of(fmt, array, sample) is None  # arrays stay serial
    lines = tmp_path / "lines.jsonl"
    lines.write_text('{"time": "2026-01-01T00:00:00Z", "authorization": "Bearer a.b.c"}\n' * 3)
    assert ingest_parallel.layout_of(fmt, lines, sources.base.sniff_container(lines)) == ingest_parallel.Layout("ndjson")
    assert ingest_parallel.plan(fmt, lines, sources.base.sniff_container(lines), {"ingest_workers": 2}) is None  # small


# ---------------------------------------------------------------------- the gateway's block fast path
_POOL: list[Any] = [
    None, "", " ", "-", "null", "NONE", 0, 1, True, 1.0, 2**70, "200", " 200 ", [], {}, {"a": 1}, "198.51.100.7",
    "198.51.100.7:443", "[2001:db8::1]:80", "10.0.0.1, 10.0.0.2", "300.1.1.1", "2026-10-26T01:02:03.123Z",
    "2026-10-26T01:02:03Z", "1761440523", 1761440523123, "26/Oct/2026:01:02:03 +0000", "2026-02-30T00:00:00Z", "12345",
    "req-1", "ünïcode", "\ud800", "/p?token=abc", "/p?x=eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.", "Bearer x", "Basic dXNlcg==",
    "GeT", "HOST.Example.COM", "eyJ",
]
_KEYS = ["time", "timestamp", "client_ip", "src_ip", "clientIp", "host", "Host", "path", "url", "method", "user_agent",
         "status", "status_code", "request_id", "requestId", "id", "token", "access_token", "headers", "a.b",
         "duration_ms", "note", "my_token"]


def _mutated(records: list[dict], rng: random.Random, n: int) -> list[RawRecord]:
    out = []
    for i in range(n):
        record = dict(rng.choice(records))
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            op = rng.random()
            if op < 0.4:
                record[rng.choice(list(record))] = rng.choice(_POOL)
            elif op < 0.65:
                record[rng.choice(_KEYS)] = rng.choice(_POOL + [{"authorization": "Bearer q.r.s"}])
            elif op < 0.8:
                record.pop(rng.choice(list(record)))
            else:
                key = rng.choice(list(record))
                record[key.upper()] = record.pop(key)
        if rng.random() < 0.03:
            out.append(RawRecord(i + 1, i + 1, "{bad", None, "malformed JSON"))
        else:
            out.append(RawRecord(i + 1, i + 1, json.dumps(record, default=str), record, None))
    return out


def test_gateway_fast_path_matches_normalize(inputs: list[Path]):
    base = [json.loads(line) for line in inputs[2].read_text(encoding="utf-8").splitlines()[:200]]
    fmt = sources.by_name("gateway_jsonl")
    rng = random.Random(11)
    taken = 0
    for _ in range(40):
        records = _mutated(base, rng, 100)
        fast_ctx = Context(Path("g.jsonl"), fmt.name, "B", {})
        slow_ctx = Context(Path("g.jsonl"), fmt.name, "B", {})
        got = gateway.normalize_many(records, fast_ctx)
        columns = got.columns.get("token_events", {})
        for n, i in enumerate(got.owner.get("token_events", [])):
            verdict = judge(fmt, slow_ctx, records[i])
            assert verdict[0] == "rows", records[i].data
            assert {c: v[n] for c, v in columns.items()} == verdict[1][0].row, records[i].data
            taken += 1
        for i in got.rest:
            judge(fmt, slow_ctx, records[i])
            judge(fmt, fast_ctx, records[i])
        assert dict(fast_ctx.options["_raw_tokens"].export()) == dict(slow_ctx.options["_raw_tokens"].export())
    assert taken > 1000  # the fast path did take most records


def test_gateway_fast_path_leaves_custom_field_names_to_normalize(inputs: list[Path]):
    base = [json.loads(line) for line in inputs[2].read_text(encoding="utf-8").splitlines()[:5]]
    records = [RawRecord(i + 1, i + 1, "", r, None) for i, r in enumerate(base)]
    ctx = Context(Path("g.jsonl"), "gateway_jsonl", "B", {"token_fields": {"time": "ts"}})
    assert gateway.normalize_many(records, ctx).rest == list(range(5))


_GRAPH_POOL: list[Any] = [
    None, "", " ", "-", 0, 1, True, False, 1.5, 2**70, [], {}, ["x"], {"a": 1}, "2b8f4c1e-7d3a-4e59-9c06-5a1f8e2d3b47",
    "{2B8F4C1E-7D3A-4E59-9C06-5A1F8E2D3B47}", "not-a-guid", "2026-11-02T08:15:01.1234567+01:00", "11/2/2026 8:15:01 AM",
    "2026-02-30T00:00:00Z", 1700000000, "198.51.100.7", "[2001:db8::1]:443", "300.1.1.1", " Megan.Bowen@Contoso.com ",
    "ünïcode", "\ud800x", "eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.sig", "Success", ["nonInteractiveUser"], ["bogus"], "TRUE", "no",
    {"errorCode": "Success"}, {"errorCode": 50126, "failureReason": " x "}, {"city": "  ", "countryOrRegion": "IE"},
    '{"city": "Oslo"}',
]
_GRAPH_KEYS = ["id", "createdDateTime", "userPrincipalName", "isInteractive", "signInEventTypes", "status", "location",
               "ipAddress", "resourceTenantId", "uniqueTokenIdentifier", "status.errorCode", "newField", "userAgent"]


def test_graph_fast_path_matches_normalize(inputs: list[Path]):
    fmt = sources.by_name("graph_json")
    base = [json.loads(line) for line in inputs[0].read_text(encoding="utf-8").splitlines()[:150]]
    sample = Path(__file__).resolve().parents[1] / "sample_logs" / "signins" / "graph_beta"
    for path in sorted(sample.glob("*.json")):
        base += [r.data for r in fmt.records(path) if isinstance(r.data, dict)]
    rng = random.Random(3)
    taken = 0
    for _ in range(40):
        records = []
        for i in range(60):
            record = json.loads(json.dumps(rng.choice(base)))
            for _ in range(rng.choice([0, 0, 1, 2, 3])):
                if rng.random() < 0.7:
                    record[rng.choice(_GRAPH_KEYS if rng.random() < 0.6 else list(record))] = rng.choice(_GRAPH_POOL)
                elif record:
                    record.pop(rng.choice(list(record)))
            records.append(RawRecord(i + 1, i + 1, "", record, None))
        options = rng.choice([{}, {"sign_in_type": "interactive"}, {"day_first": True}])
        path = Path(rng.choice(["g.json", "NonInteractiveSignIns_2026.json"]))
        got = graph.normalize_many_graph(records, Context(path, fmt.name, "B", dict(options)))
        columns = got.columns.get("signins", {})
        for n, i in enumerate(got.owner.get("signins", [])):
            verdict = judge(fmt, Context(path, fmt.name, "B", dict(options)), records[i])
            assert verdict[0] == "rows", records[i].data
            assert {c: v[n] for c, v in columns.items()} == verdict[1][0].row, records[i].data
            taken += 1
    assert taken > 1000


def test_workers_carry_raw_tokens_back_only_in_memory(tmp_path: Path, inputs: list[Path], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TOKENHUNT_PARALLEL_MIN_BYTES", "0")
    lake = Lake(tmp_path / "lake")
    ingest_paths(lake, [inputs[2]], quality_policy="off", options={"ingest_workers": 2})
    raw = inputs[2].read_text(encoding="utf-8")
    token = json.loads(raw.splitlines()[0])["authorization"][len("Bearer "):]
    for path in lake.root.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    assert lake.read_table("tokens").num_rows > 0  # derived from the tokens the workers sent back
    shutil.rmtree(lake.root)
