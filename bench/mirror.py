"""The mirror step against a plain MinIO copy: MB/s, peak RSS, and resuming a cut download.

Two real MinIO servers (tests/support/minio_server.py, the binary in
``$MODELSERVE_TOOLS_DIR``): an upstream one whose bucket is the catalog (the S3
catalog presigns its URLs) and the target store. One GGUF-shaped object
(a valid header, then random F16 tensors: 256 MiB, ``BENCH_FULL=1`` 1 GiB) is
moved from one to the other, round by round, three ways, each in its own
process so its peak RSS (VmHWM) is its own:

- ``mirror``: the product's step (availability -> signed-url -> mirror, the
  real handlers, SQLite): the presigned GET streamed into the upload to the
  target bucket in one pass (each chunk also appended to scratch space, for a
  resume; sha256 on the way; the GGUF header checked before the upload
  commits); the clock covers ``mirror.handle`` only;
- ``plain copy``: the ``minio`` client's ``get_object`` streamed into
  ``put_object`` between the same buckets (what ``mc cp`` does);
- ``resume``: a mirror killed (SIGKILL) once its scratch file holds half the
  object, then run again on the same scratch space: the download goes on with
  an HTTP Range request after replaying the bytes already there into the
  upload. The clock covers the second run's ``mirror.handle``. The killed
  run's lease is expired by hand first: in the product a redelivery waits up
  to ``LEASE_TTL`` (2 minutes) for it, which the row's note states.

    .venv/bin/python bench/mirror.py            # BENCH_FULL=1: 1 GiB, more rounds
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO, cast

from common import (
    MODELS,
    Row,
    full_mode,
    interleaved,
    median,
    row,
    run_measured,
    serve_requested,
    support_on_path,
    write_results,
)

MiB = 2**20
NAME = "bench-mirror"
CATALOG_BUCKET = "catalog"


def gguf_shaped(size_mib: int) -> Path:
    """A GGUF of about ``size_mib`` MiB: a real header (llama keys) and random F16 data,
    so the mirror's header check passes; cached under ~/.cache/modelserve/bench-models."""
    path = MODELS / f"mirror-{size_mib}mib.gguf"
    if path.exists():
        return path
    import gguf  # here, not at the top: the children's RSS must not carry numpy
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path.with_suffix(".tmp")), "llama")
    writer.add_name(f"bench-mirror-{size_mib}mib")
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
    writer.add_context_length(2048)
    writer.add_embedding_length(4096)
    writer.add_block_count(size_mib // 64)
    writer.add_head_count(32)
    writer.add_head_count_kv(8)
    chunk = 64 * MiB
    for index in range(max(1, size_mib * MiB // chunk)):
        data = np.frombuffer(rng.bytes(chunk), dtype=np.float16).reshape(-1, 4096)
        writer.add_tensor(f"blk.{index}.ffn_up.weight", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    path.with_suffix(".tmp").rename(path)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


# --- the children: one job each, a JSON line on stdout ----------------------------------


def peak_rss() -> int:
    """This process's peak resident set (VmHWM), in bytes; see common.run_measured."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child_mirror(config: dict[str, Any]) -> dict[str, Any]:
    """The product's steps in this process: availability -> signed-url -> (timed) mirror."""
    from modelserve.functions.context_factory import build_context
    from modelserve.functions.steps import availability, mirror, signed_url
    from modelserve.shared import events as ev
    from modelserve.shared.auth.tokens import TokenIssuer
    from modelserve.shared.db.engine import make_engine, make_sessionmaker
    from modelserve.shared.db.migrate import upgrade
    from modelserve.shared.db.models import Lease
    from modelserve.shared.settings import load_settings

    imports_rss = peak_rss()
    settings = load_settings(
        mode="local",
        data_dir=Path(config["data_dir"]),
        jwt_secret=config["jwt_secret"],
        store_backend="minio",
        minio_endpoint=config["target"]["endpoint"],
        minio_access_key=config["target"]["access_key"],
        minio_secret_key=config["target"]["secret_key"],
        bucket=config["bucket"],
        catalog_backend="s3",
        catalog_url=f"http://{config['upstream']['endpoint']}",
        catalog_access_key=config["upstream"]["access_key"],
        catalog_secret_key=config["upstream"]["secret_key"],
        catalog_bucket=CATALOG_BUCKET,
    )

    async def run() -> dict[str, Any]:
        engine = make_engine(settings.resolved_database_url)
        await upgrade(engine)
        sessions = make_sessionmaker(engine)
        async with sessions.begin() as session:  # a killed attempt's lease, taken as expired
            from sqlalchemy import delete

            await session.execute(delete(Lease))
        ctx = build_context(settings)
        await ctx.store.ensure_ready()
        event = await serve_requested(sessions, settings, TokenIssuer.from_settings(settings), NAME)
        missing = await availability.handle(event, ctx)
        assert missing is not None and missing["type"] == ev.MODEL_MISSING, missing
        signed = await signed_url.handle(missing, ctx)
        assert signed is not None and signed["type"] == ev.MODEL_URL_SIGNED, signed
        scratch = settings.resolved_work_dir / "mirror" / f"{NAME}.part"
        already = scratch.stat().st_size if scratch.exists() else 0
        started = time.perf_counter()
        available = await mirror.handle(signed, ctx)
        seconds = time.perf_counter() - started
        assert available["type"] == ev.MODEL_AVAILABLE, available
        await ctx.http.aclose()
        await engine.dispose()
        return {
            "seconds": seconds,
            "resumed_from": already,
            "peak_rss": peak_rss(),
            "imports_rss": imports_rss,
        }

    return asyncio.run(run())


def child_copy(config: dict[str, Any]) -> dict[str, Any]:
    """``get_object`` streamed into ``put_object``: the plain copy between the same buckets."""
    from minio import Minio

    up, down = config["upstream"], config["target"]
    source = Minio(up["endpoint"], up["access_key"], up["secret_key"], secure=False)
    target = Minio(down["endpoint"], down["access_key"], down["secret_key"], secure=False)
    key = f"{NAME}.gguf"
    started = time.perf_counter()
    size = source.stat_object(CATALOG_BUCKET, key).size
    assert size is not None
    response = source.get_object(CATALOG_BUCKET, key)
    try:  # the response is file-like (read(n)): streamed, never held whole
        target.put_object(config["bucket"], f"{NAME}/{key}", cast(BinaryIO, response), size)
    finally:
        response.close()
        response.release_conn()
    return {"seconds": time.perf_counter() - started, "peak_rss": peak_rss()}


# --- the parent ---------------------------------------------------------------------------


class Rig:
    def __init__(self, size_mib: int, work: Path) -> None:
        support_on_path()
        from support.minio_server import start_minio

        self.upstream, self.target = start_minio(), start_minio()
        self.work = work
        self.file = gguf_shaped(size_mib)
        self.size = self.file.stat().st_size
        client = self.upstream.client()
        client.make_bucket(CATALOG_BUCKET)
        client.fput_object(
            CATALOG_BUCKET,
            f"{NAME}.gguf",
            str(self.file),
            metadata={"sha256": sha256_of(self.file)},
        )
        self.secret = secrets.token_hex(32)

    def close(self) -> None:
        self.upstream.stop()
        self.target.stop()

    def config(self, data_dir: Path) -> dict[str, Any]:
        bucket = f"t-{uuid.uuid4().hex[:12]}"
        self.target.client().make_bucket(bucket)
        side = {
            name: {"endpoint": s.endpoint, "access_key": s.access_key, "secret_key": s.secret_key}
            for name, s in (("upstream", self.upstream), ("target", self.target))
        }
        return {"data_dir": str(data_dir), "jwt_secret": self.secret, "bucket": bucket, **side}

    def drop(self, config: dict[str, Any]) -> None:
        """Empty the run's target bucket and scratch space (1 GiB each in full mode)."""
        client = self.target.client()
        for item in client.list_objects(config["bucket"], recursive=True):
            client.remove_object(config["bucket"], item.object_name)
        client.remove_bucket(config["bucket"])
        shutil.rmtree(config["data_dir"], ignore_errors=True)

    def argv(self, job: str, config: dict[str, Any]) -> list[str]:
        return [sys.executable, __file__, "--child", job, json.dumps(config)]

    def measured(self, job: str) -> dict[str, Any]:
        config = self.config(self.work / uuid.uuid4().hex)
        try:
            out, wall = run_measured(self.argv(job, config))
        finally:
            self.drop(config)
        return {**json.loads(out.strip().splitlines()[-1]), "wall": wall}

    def resumed(self) -> dict[str, Any]:
        """Kill a mirror at half the object, then time the second run on its scratch file."""
        config = self.config(self.work / uuid.uuid4().hex)
        scratch = Path(config["data_dir"]) / "work" / "mirror" / f"{NAME}.part"
        try:
            process = subprocess.Popen(self.argv("mirror", config), stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and process.poll() is None:
                if scratch.exists() and scratch.stat().st_size >= self.size // 2:
                    os.kill(process.pid, signal.SIGKILL)
                    break
                time.sleep(0.005)
            process.wait()
            if process.returncode != -signal.SIGKILL:
                raise RuntimeError(f"the mirror to cut ended by itself ({process.returncode})")
            cut = scratch.stat().st_size
            out, wall = run_measured(self.argv("mirror", config))
        finally:
            self.drop(config)
        result = json.loads(out.strip().splitlines()[-1])
        return {**result, "cut_at": cut, "wall": wall}


def table_rows(samples: dict[str, list[dict[str, Any]]], size: int) -> list[Row]:
    mb = size / 1e6
    mirror = median([s["seconds"] for s in samples["mirror"]])
    copy = median([s["seconds"] for s in samples["plain copy"]])
    resume = median([s["seconds"] for s in samples["resume"]])
    rss = max(s["peak_rss"] for s in samples["mirror"]) / MiB
    copy_rss = max(s["peak_rss"] for s in samples["plain copy"]) / MiB
    resume_rss = max(s["peak_rss"] for s in samples["resume"]) / MiB
    cut = median([s["resumed_from"] / size for s in samples["resume"]])
    n = len(samples["mirror"])
    imports_rss = min(s["imports_rss"] for s in samples["mirror"]) / MiB
    size_text = f"{size / MiB:.0f} MiB GGUF-shaped object"
    return [
        row(
            "mirror MB/s vs plain minio copy",
            mb / mirror,
            mb / copy,
            "MB/s",
            f"{size_text}, MinIO -> presigned GET -> sha256 (+ scratch copy) -> MinIO in one "
            f"pass, one 8 MiB part in flight, against get_object -> put_object (the client's "
            f"defaults: 5 MiB parts, 3 in flight); medians of {n} interleaved rounds",
            goal=">= 0.8x",
        ),
        row(
            "mirror peak RSS vs plain minio copy",
            rss,
            copy_rss,
            "MiB",
            f"each in its own process (VmHWM); resumed mirror {resume_rss:.0f} MiB; "
            f"the mirror's imports alone {imports_rss:.0f} MiB, the rest the stream "
            "(8 MiB upload parts)",
            goal="<= 150 MB",
        ),
        row(
            "mirror resume after a cut vs a fresh mirror",
            resume,
            mirror,
            "s",
            f"killed at {cut:.0%} of the download; the second run replays the scratch file "
            "into the upload and fetches the rest with Range (the upload is whole either way); "
            "excludes the wait for the killed run's lease (up to 2 min in the product: LEASE_TTL)",
        ),
    ]


def main() -> None:
    full = full_mode()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024 if full else 256)
    parser.add_argument("--rounds", type=int, default=5 if full else 3)
    parser.add_argument("--child", choices=["mirror", "copy"], help=argparse.SUPPRESS)
    parser.add_argument("config", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job = child_mirror if args.child == "mirror" else child_copy
        print(json.dumps(job(json.loads(args.config))), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="modelserve-bench-mirror-") as tmp:
        rig = Rig(args.size_mib, Path(tmp))
        try:
            rig.measured("copy")  # warm-up: page cache, both servers' first requests
            samples = interleaved(
                args.rounds,
                {
                    "mirror": lambda: rig.measured("mirror"),
                    "plain copy": lambda: rig.measured("copy"),
                    "resume": rig.resumed,
                },
            )
        finally:
            rig.close()
        size = rig.size
    rows = table_rows(samples, size)
    out = write_results(
        "mirror",
        rows,
        settings={"size_bytes": size, "rounds": args.rounds, "full": full},
        samples=samples,
    )
    for item in rows:
        print(f"{item['row']}: {item['ours']:.1f} vs {item['baseline']:.1f} {item['unit']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
