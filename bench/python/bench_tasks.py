"""The task bodies that the benchmarks run on hkube's Python runtime and on Ray: the same code on
both sides, so that the two measure the same work.

hkube's benchmarks copy this file into each generated algorithm's folder and call it from a
one-line `start`; `bench/ray/workloads.py` imports it and wraps the same functions in
`ray.remote`. Nothing here knows which side runs it.
"""

import os
import struct
import time
import zlib

STAMP = struct.Struct("d")


def make(size):
    """`size` bytes of 0x01, written (so their pages exist, as real data's would), whose first 8
    bytes are a `time.time()` stamp of the moment they are handed over: the consumer times the
    passing from it."""
    data = bytearray(b"\x01") * size
    if size >= STAMP.size:
        STAMP.pack_into(data, 0, time.time())
    return data


def consume(data):
    """Reads every byte of `data`: a CRC-32 over all of it after the stamp, at memory speed.

    Returns `[size, passing, crc, reading]`: `passing` is the time from the producer's stamp to
    the end of the read (0 without a stamp), `crc` the CRC-32 of the bytes after the stamp (so
    that the caller can check every byte arrived), `reading` the time the CRC itself took."""
    view = memoryview(data).cast("B")
    if view.nbytes < STAMP.size:
        return [view.nbytes, 0.0, zlib.crc32(view), 0.0]
    stamp = STAMP.unpack_from(view, 0)[0]
    begin = time.time()
    crc = zlib.crc32(view[STAMP.size:])
    end = time.time()
    return [view.nbytes, end - stamp, crc, end - begin]


def expected_crc(size):
    """What `consume` answers as `crc` for `make(size)`'s bytes, computed without holding them."""
    if size < STAMP.size:
        return zlib.crc32(b"\x01" * size)
    crc, left, chunk = 0, size - STAMP.size, b"\x01" * (1 << 20)
    while left:
        piece = chunk[: min(left, len(chunk))]
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    return crc


def nap(seconds):
    """Sleeps; answers `[pid, seconds it took]`, so that a batch shows how many processes ran it."""
    begin = time.perf_counter()
    time.sleep(seconds)
    return [os.getpid(), time.perf_counter() - begin]


def spin(n):
    """A pure-Python loop of `n` rounds on one core (no IO, holds the GIL throughout); answers
    `[pid, seconds it took]`."""
    begin = time.perf_counter()
    total = 0
    for i in range(n):
        total += i ^ (total & 0xFF)
    return [os.getpid(), time.perf_counter() - begin]


def calibrate(seconds):
    """The `n` for which `spin(n)` takes `seconds` on one core of this machine now (within 5%,
    in at most 3 passes), and what `spin(n)` then took (the median of 3): `[n, took]`."""
    n = 10_000
    while True:
        took = spin(n)[1]
        if took >= 0.1:
            break
        n *= 4
    # Scaled, then measured and scaled again: a first guess taken while the machine was busy
    # is corrected by the next pass.
    for _ in range(3):
        n = max(int(n * seconds / took), 1)
        took = sorted(spin(n)[1] for _ in range(3))[1]
        if abs(took - seconds) <= 0.05 * seconds:
            break
    return [n, took]
