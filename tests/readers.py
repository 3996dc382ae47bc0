#!/usr/bin/env python3
"""Independent readers for storagetapper chunk files (used by tests/formats.rs).

usage: readers.py FORMAT FILE...   (FORMAT: json | msgpack | avro | parquet | avro-events | parquet-events)

Reads the files with other people's libraries (json, msgpack, fastavro, pyarrow; zstandard for
the outer .zst) and prints one JSON object per row: column -> [tag, text], where the tag says
what Python type the reader produced. `__storagetapper_raw` entries become ["raw", text].
"""
import datetime
import decimal
import io
import json
import sys

RAW = "__storagetapper_raw"


def plain(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def tag(v):
    if v is None:
        return ["null"]
    if isinstance(v, bool):
        return ["bool", str(v)]
    if isinstance(v, int):
        return ["int", str(v)]
    if isinstance(v, float):
        return ["float", repr(v)]
    if isinstance(v, decimal.Decimal):
        return ["dec", format(v, "f")]
    if isinstance(v, datetime.datetime):
        s = "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (
            v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)
        if v.tzinfo is not None:
            if v.utcoffset() != datetime.timedelta(0):
                raise SystemExit("timestamp not in UTC: %r" % v)
            return ["ts_utc", s]
        return ["ts", s]
    if isinstance(v, datetime.date):
        return ["date", "%04d-%02d-%02d" % (v.year, v.month, v.day)]
    if isinstance(v, (bytes, bytearray)):
        return ["bytes", bytes(v).hex()]
    if isinstance(v, str):
        return ["str", v]
    if isinstance(v, (dict, list)):
        return ["json", json.dumps(v)]
    raise SystemExit("unexpected %s: %r" % (type(v).__name__, v))


def records(fmt, path):
    if fmt == "json":
        for line in plain(path).decode("utf-8").splitlines():
            yield json.loads(line)
    elif fmt == "msgpack":
        import msgpack

        yield from msgpack.Unpacker(io.BytesIO(plain(path)), raw=False)
    elif fmt == "avro":
        import fastavro

        yield from fastavro.reader(io.BytesIO(plain(path)))
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
    else:
        raise SystemExit("unknown format " + fmt)


def row(r):
    if r is None:
        return None
    raw = r.pop(RAW, None) or {}
    return {k: (["raw", raw[k]] if k in raw else tag(v)) for k, v in r.items()}


def events(files):
    """Change events of Avro changelog files: the fields a test compares, images tagged."""
    import fastavro

    for path in files:
        for e in fastavro.reader(io.BytesIO(plain(path))):
            print(json.dumps({
                "op": e["op"], "seqno": e["seqno"], "gtid": e["source"]["gtid"],
                "db": e["source"]["db"], "table": e["source"]["table"], "ddl": e["ddl"],
                "before": row(e["before"]), "after": row(e["after"]), "key": row(e["key"]),
            }))


def parquet_events(files):
    """Change events of Parquet changelog files, in the shape `events` prints: the image of an
    event is in the `before_<t>`/`after_<t>`/`key_<t>` structs of its table, the others null."""
    import pyarrow.parquet as pq

    for path in files:
        for e in pq.read_table(path).to_pylist():
            images = {}
            for prefix in ("before", "after", "key"):
                found = [v for k, v in e.items() if k.startswith(prefix + "_") and v is not None]
                if len(found) > 1:
                    raise SystemExit("more than one %s image in %r" % (prefix, e))
                images[prefix] = row(found[0]) if found else None
            print(json.dumps({
                "op": e["op"], "seqno": e["seqno"], "gtid": e["source"]["gtid"],
                "db": e["source"]["db"], "table": e["source"]["table"], "ddl": e["ddl"],
                **images,
            }))


def main():
    fmt, files = sys.argv[1], sys.argv[2:]
    if fmt == "avro-events":
        return events(files)
    if fmt == "parquet-events":
        return parquet_events(files)
    for path in files:
        for rec in records(fmt, path):
            raw = rec.pop(RAW, None) or {}
            if isinstance(raw, str):
                raw = json.loads(raw)
            if fmt == "json":
                raw = {}  # the JSON format keeps exact JSON text there; the value is the reader's
            out = {}
            for k, v in rec.items():
                out[k] = ["raw", raw[k]] if k in raw else tag(v)
            print(json.dumps(out))


if __name__ == "__main__":
    main()
