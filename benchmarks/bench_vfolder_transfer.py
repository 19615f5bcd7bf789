"""Virtual-folder transfer throughput through the storage proxy, as a ratio against ``cp`` in the same run.

1. Upload: a file sent with tus ``PATCH`` requests (64 MiB each, streamed) vs ``cp`` of the same file on
   the same disk (target: ratio of throughputs ≥ 0.5).
2. Download: ``GET /download`` streamed to a file vs the same ``cp`` (target ≥ 0.5).
3. The proxy's RSS, sampled every 200 ms during both transfers (target: peak < 100 MB, and flat: the
   peak stays within 32 MB of the RSS before the transfers).

Each number is the median of 3 interleaved rounds (cp, upload, download). The client is a minimal HTTP/1.1
client on a plain socket (one keep-alive connection, 1 MiB blocks, like ``cp`` a loop of read and write
calls), so the numbers measure the proxy, not a client library.

Run: ``.venv/bin/python benchmarks/bench_vfolder_transfer.py [--size-mb 1024] [--repeat 3]``. It starts its
own throw-away proxy; the file lives in a temporary directory; every timed step starts after a ``sync`` so
that none pays for the previous one's dirty pages.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ai.backend.testutils.storage import StorageProxy, launch_storage_proxy

BLOCK = 1 << 20
PATCH_SIZE = 64 << 20


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Samples a process's RSS in a background thread."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(_rss(self.pid))
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _make_file(path: Path, size: int) -> None:
    block = os.urandom(BLOCK)
    with open(path, "wb") as f:
        for i in range(size // BLOCK):
            f.write(block[i % 251:] + block[: i % 251])  # not one repeated block: defeats dedup/compression
        f.write(block[: size % BLOCK])


def _token(sp: StorageProxy, path: str, body: dict[str, Any]) -> str:
    r = sp.request("POST", path, body)
    r.raise_for_status()
    return str(r.json()["token"])


def _connect(sp: StorageProxy) -> socket.socket:
    host, port = sp.client_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)))


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and any body bytes already received of one HTTP/1.1 response."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def _upload(sp: StorageProxy, vfid: str, src: Path, size: int) -> float:
    token = _token(sp, "/folder/file/upload", {"volume": sp.volume, "vfid": vfid, "relpath": "up.bin", "size": size})
    sock = _connect(sp)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    t = time.perf_counter()
    with open(src, "rb", buffering=0) as f:
        offset = 0
        while offset < size:
            n = min(PATCH_SIZE, size - offset)
            sock.sendall((f"PATCH /upload?token={token} HTTP/1.1\r\nHost: proxy\r\nTus-Resumable: 1.0.0\r\n"
                          f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n"
                          f"Content-Length: {n}\r\n\r\n").encode())
            left = n
            while left:
                got = f.readinto(view[: min(BLOCK, left)])
                sock.sendall(view[:got])
                left -= got
            status, headers, _ = _read_head(sock)
            if status != 204:
                raise RuntimeError(f"PATCH answered {status}")
            offset = int(headers["upload-offset"])
    elapsed = time.perf_counter() - t
    sock.close()
    return elapsed


def _download(sp: StorageProxy, vfid: str, dst: Path) -> float:
    token = _token(sp, "/folder/file/download", {"volume": sp.volume, "vfid": vfid, "relpath": "up.bin"})
    sock = _connect(sp)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    t = time.perf_counter()
    sock.sendall(f"GET /download?token={token} HTTP/1.1\r\nHost: proxy\r\n\r\n".encode())
    status, headers, rest = _read_head(sock)
    if status != 200:
        raise RuntimeError(f"download answered {status}")
    left = int(headers["content-length"])
    with open(dst, "wb", buffering=0) as f:
        f.write(rest)
        left -= len(rest)
        while left:
            n = sock.recv_into(view[: min(BLOCK, left)])
            if not n:
                raise RuntimeError("connection closed early")
            f.write(view[:n])
            left -= n
    elapsed = time.perf_counter() - t
    sock.close()
    return elapsed


def _cp(src: Path, dst: Path) -> float:
    os.sync()
    t = time.perf_counter()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    elapsed = time.perf_counter() - t
    dst.unlink()
    return elapsed


def main(size_mb: int = 1024, repeat: int = 3) -> dict[str, Any]:
    size = size_mb * BLOCK
    with tempfile.TemporaryDirectory(prefix="bai-bench-vf-") as tmp:
        root = Path(tmp)
        src = root / "src.bin"
        _make_file(src, size)
        sp = launch_storage_proxy(root / "proxy")
        try:
            vfid = uuid.uuid4().hex
            sp.request("POST", "/folder/create", {"volume": sp.volume, "vfid": vfid}).raise_for_status()
            _cp(src, root / "warm.bin")  # page cache warm for everybody
            rss_before = _rss(sp.pid)
            cps: list[float] = []
            ups: list[float] = []
            downs: list[float] = []
            up_rss: list[int] = []
            down_rss: list[int] = []
            # Interleaved rounds, so that a burst of load from elsewhere on the machine hits all three alike.
            for _ in range(repeat):
                cps.append(_cp(src, root / "cp.bin"))
                os.sync()  # every timed step starts without dirty pages from the previous one
                with RssSampler(sp.pid) as sampler:
                    ups.append(_upload(sp, vfid, src, size))
                up_rss += sampler.samples
                assert (sp.folder_path(vfid) / "up.bin").stat().st_size == size
                os.sync()
                with RssSampler(sp.pid) as sampler:
                    downs.append(_download(sp, vfid, root / "down.bin"))
                down_rss += sampler.samples
                same = filecmp.cmp(src, root / "down.bin", shallow=False)
                (root / "down.bin").unlink()
                if not same:
                    raise RuntimeError("the downloaded file differs from the uploaded one")
            rss_after = _rss(sp.pid)
        finally:
            sp.shutdown()
    t_cp, t_up, t_down = statistics.median(cps), statistics.median(ups), statistics.median(downs)
    mb = size / 1e6
    peak = max(up_rss + down_rss)
    return {
        "size_bytes": size, "repeat": repeat,
        "cp_s": t_cp, "cp_runs_s": cps, "cp_MBps": mb / t_cp,
        "upload": {"s": t_up, "runs_s": ups, "MBps": mb / t_up, "ratio": t_cp / t_up, "target": 0.5},
        "download": {"s": t_down, "runs_s": downs, "MBps": mb / t_down, "ratio": t_cp / t_down, "target": 0.5},
        "rss": {"before_MB": rss_before / 1e6, "peak_upload_MB": max(up_rss) / 1e6,
                "peak_download_MB": max(down_rss) / 1e6, "after_MB": rss_after / 1e6,
                "peak_MB": peak / 1e6, "growth_MB": (peak - rss_before) / 1e6,
                "samples": len(up_rss) + len(down_rss), "target_peak_MB": 100},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=int(os.environ.get("BENCH_VF_SIZE_MB", "1024")))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    res = main(args.size_mb, args.repeat)
    for name in ("upload", "download"):
        r = res[name]
        verdict = "ok" if r["ratio"] >= r["target"] else "MISSED"
        print(f"{name:9s} {r['MBps']:8.1f} MB/s vs cp {res['cp_MBps']:.1f} MB/s: ratio {r['ratio']:.3f} "
              f"(target ≥ {r['target']}) {verdict}")
    rss = res["rss"]
    flat = rss["peak_MB"] < rss["target_peak_MB"] and rss["growth_MB"] < 32
    print(f"proxy RSS  before {rss['before_MB']:.1f} MB, peak {rss['peak_MB']:.1f} MB, after {rss['after_MB']:.1f} MB "
          f"(target < {rss['target_peak_MB']} MB, flat) {'ok' if flat else 'MISSED'}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "vfolder_transfer.json").write_text(json.dumps(res, indent=2))
