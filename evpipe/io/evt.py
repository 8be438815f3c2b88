"""Prophesee RAW event streams: EVT 2.0 and EVT 3.0 (specs/formats.md sections 2-4).

Header: '% key value' lines up to '% end' or the first other line (parse_percent_header).
The encoding comes from `% format EVT2|EVT3;...` or the legacy `% evt 2.0|3.0`; geometry
from `% geometry WxH`, `% format ...;height=H;width=W`, else from `plugin_name` or
`system_ID` as OpenEB infers it for legacy files (openeb hal_psee_plugins
.../boards/rawfile/psee_raw_file_header.cpp `check_header`, .../raw_constants.h
`plugins_map`), else 1280x720 is assumed (faery's fallback; `metadata["geometry"]` says so).

Decoding follows OpenEB (hal/cpp/include/metavision/hal/decoders/evt2/evt2_decoder.h,
evt3/evt3_decoder.h with its default BasicCheckValidator): words before the first TIME_HIGH
are skipped and timestamps are absolute (no time shifting, as faery and expelliarmus), in
microseconds. Events outside the sensor (`sensor_size`, which may be overridden when
opening) are dropped, counted in `metadata["dropped_events"]` and reported by one warning
per pass; unknown word types are skipped and counted in `metadata["unknown_words"]`.
Files written by evpipe may carry `% evpipe_time_base_us N`, added to every timestamp
(other readers ignore it). A trailing partial word is reported and ignored.
`read()` of a large file decodes a memory map of it on all Numba threads (NUMBA_NUM_THREADS),
with the same result as the serial decoder that chunked reads use.

Where evpipe departs from OpenEB (never on the sample files): EVT3 vector words are decoded
one by one (OpenEB reads a VECT_12 as the first of a VECT_12, VECT_12, VECT_8 triple and
drops the whole triple when base + 32 > width); y is the 11-bit field (OpenEB compares the
12-bit content, system-type bit included, with the height); ADDR_X events with x >= width
and EVT2 CD events outside the sensor are dropped (OpenEB forwards them).

Writers (`evt2`, `evt3`) keep event order and exact timestamps, including backward steps;
the one thing they refuse (ConfigError) is an event in an earlier time loop (2^34 us for
EVT2, 2^24 us for EVT3) than an event before it, because readers count loops upwards.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import get_num_threads, njit, prange

from ..errors import ConfigError
from ..events import EVENT_DTYPE, SensorSize
from .base import FORMATS, WRITERS, EventReader, parse_percent_header

MAX_ADDRESS = 2048        # x and y are 11-bit fields in both encodings
MAX_LOOPS = 1 << 20       # time loops a written file may span (2 words each)

# Legacy headers: geometry by plugin (openeb hal_psee_plugins raw_constants.h `plugins_map`,
# plus the IMX636 EVK4 plugin, whose headers say 1280x720) and by system_ID (openeb
# psee_raw_file_header.cpp `system_id_map`, ids from devices/utils/device_system_id.h).
_VGA, _HD = SensorSize(640, 480), SensorSize(1280, 720)
PLUGIN_GEOMETRY = {
    "hal_plugin_gen3_fx3": _VGA, "hal_plugin_gen31_fx3": _VGA, "hal_plugin_gen31_evk2": _VGA,
    "hal_plugin_gen31_evk3": _VGA, "hal_plugin_gen4_fx3": _HD, "hal_plugin_gen4_evk2": _HD,
    "hal_plugin_gen41_evk2": _HD, "hal_plugin_gen41_evk3": _HD, "hal_plugin_imx636_evk4": _HD,
}
SYSTEM_ID = {  # system_ID -> (geometry, encoding)
    0x15: (_VGA, "2.0"), 0x1C: (_VGA, "2.0"), 0x1A: (_HD, "2.0"), 0x17: (_VGA, "2.0"),
    0x97: (_VGA, "2.0"), 0x19: (_VGA, "2.0"), 0x99: (_VGA, "2.0"), 0x1D: (_VGA, "2.0"),
    0x23: (_VGA, "2.0"), 0x1E: (_HD, "3.0"), 0x2E: (_HD, "3.0"), 0x21: (_VGA, "2.0"),
    0xA1: (_VGA, "2.0"), 0x22: (_VGA, "2.0"), 0xA2: (_VGA, "2.0"), 0x29: (_VGA, "2.0"),
    0x1F: (_HD, "2.0"), 0x27: (_HD, "2.0"), 0x28: (_VGA, "3.0"), 0x30: (_HD, "3.0"),
}
DEFAULT_GEOMETRY = _HD
_FORMAT_VERSION = {"EVT2": "2.0", "EVT21": "2.1", "EVT3": "3.0", "EVT4": "4.0"}

# EVT 2.0 (openeb evt2_decoder.h): TIME_HIGH holds timestamp bits 6..33; a TIME_HIGH lower
# than the current base by at least MaxTimestamp - LoopThreshold is a loop of 2^34 us.
EVT2_MAX_TS = ((1 << 28) - 1) << 6
EVT2_LOOP_DROP = EVT2_MAX_TS - 10000
EVT2_TIME_LOOP = 1 << 34
EVT2_UNKNOWN = sum(1 << k for k in (0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x9, 0xB, 0xC))
# EVT 3.0 (openeb evt3_decoder.h): t = loop<<24 | high<<12 | low; loop += 1 when TIME_HIGH
# drops by 2^11 or more; ERC counter words (OTHERS 0x014 / 0x016) are followed by 3 words.
EVT3_LOOP_DROP = 1 << 11
EVT3_UNKNOWN = sum(1 << k for k in (0x9, 0xB, 0xC))

ERC_WORDS = (0xE014, 0xE016)  # EVT3 OTHERS words followed by 3 words to skip

# Decoder state (int64 arrays carried across blocks): S_BASE is EVT2's, S_LOOP.. EVT3's.
S_STARTED, S_BASE, S_SHIFT, S_DROPPED, S_BEFORE, S_UNKNOWN = 0, 1, 2, 3, 4, 5
S_LOOP, S_HIGH, S_LOW, S_Y, S_ROW_OK, S_BX, S_VPOL, S_HAS_BASE, S_SKIP = range(6, 15)
STATE_SIZE = 15
# The hot loops index with np.uint64(i): Numba then skips the negative-index wraparound,
# which makes them about 30% faster.
# EVT3 row inside the kernels: y, or NO_ROW when the row is invalid (row_ok == y < height
# for every height up to 65536); ROW_UNKNOWN marks a segment's unknown incoming row.
NO_ROW, ROW_UNKNOWN = 1 << 20, 1 << 21
# set bits of 12-bit masks; lowest set bit of a 32-bit mask by de Bruijn multiplication
POP12 = np.array([bin(m).count("1") for m in range(4096)], np.uint8)
DEBRUIJN32 = 0x077CB531
CTZ_DEBRUIJN = np.zeros(32, np.uint8)
CTZ_DEBRUIJN[[((DEBRUIJN32 << b) & 0xFFFFFFFF) >> 27 for b in range(32)]] = np.arange(32)


@njit(cache=True, nogil=True)
def _pop32(m):
    """Set bits of a 32-bit mask."""
    return np.int64(POP12[m & 0xFFF]) + POP12[(m >> 12) & 0xFFF] + POP12[(m >> 24) & 0xFF]


@njit(cache=True, nogil=True)
def _in_sensor(m, bx, nbits, width):
    """The bits of vector mask m (nbits wide, bit b = column bx + b) left of `width`."""
    return m if width - bx >= nbits else m & ((np.int64(1) << max(width - bx, 0)) - 1)


@njit(cache=True, nogil=True)
def _triple(words, i, n):
    """The 32-bit mask of the VECT_12, VECT_12, VECT_8 at words[i:i + 3], or -1."""
    if i + 3 > n or (words[i] >> 12, words[i + 1] >> 12, words[i + 2] >> 12) != (4, 4, 5):
        return np.int64(-1)
    return (np.int64(words[i] & 0xFFF) | (np.int64(words[i + 1] & 0xFFF) << 12)
            | (np.int64(words[i + 2] & 0xFF) << 24))


@njit(cache=True, nogil=True)
def _emit(out, k, mask, t, x0, y, p):
    """Events (t, x0 + b, y, p) for the set bits b of `mask`, ascending, at out[k:]; returns
    the new k."""
    while mask:
        e = out[np.uint64(k)]
        e.t = t
        e.x = x0 + CTZ_DEBRUIJN[(((mask & -mask) * DEBRUIJN32) & 0xFFFFFFFF) >> 27]
        e.y = y
        e.p = p
        k += 1
        mask &= mask - 1
    return k


@njit(cache=True, nogil=True)
def _decode_evt2(words, out, state, width, height):
    """EVT 2.0 words (uint32 [n]) -> out (EVENT_DTYPE [m]); returns (words consumed,
    events written), stopping when `out` is full. `state` int64 [STATE_SIZE]: S_BASE is
    the current TIME_HIGH in us (loops and header time base included), S_SHIFT the offset
    added to TIME_HIGH values (time base + 2^34 per loop)."""
    n = words.shape[0]
    i = 0
    if not state[S_STARTED]:
        while i < n and words[i] >> 28 != 0x8:
            i += 1
        state[S_BEFORE] += i
        if i == n:
            return n, 0
        state[S_STARTED] = 1
        state[S_BASE] = (np.int64(words[i] & 0xFFFFFFF) << 6) + state[S_SHIFT]
        i += 1
    base = state[S_BASE]
    shift = state[S_SHIFT]
    cap = out.shape[0]
    k = 0
    dropped = 0
    unknown = 0
    # uint32 arithmetic: measurably faster than widening every word to int64
    w_max = np.uint32(width)
    h_max = np.uint32(height)
    while i < n and k < cap:
        w = words[np.uint64(i)]
        i += 1
        kind = w >> np.uint32(28)
        x = (w >> np.uint32(11)) & np.uint32(0x7FF)
        y = w & np.uint32(0x7FF)
        # Stored before the type is known and kept (k += 1) only for a CD event inside the
        # sensor: straight-line stores decode faster than a branch around them.
        e = out[np.uint64(k)]
        e.t = base + np.int64((w >> np.uint32(22)) & np.uint32(0x3F))
        e.x = x
        e.y = y
        e.p = kind
        if (kind <= np.uint32(1)) & (x < w_max) & (y < h_max):  # CD_OFF / CD_ON
            k += 1
        elif kind == np.uint32(0x8):  # EVT_TIME_HIGH
            th = (np.int64(w & np.uint32(0xFFFFFFF)) << 6) + shift
            if base - th >= EVT2_LOOP_DROP:
                shift += EVT2_TIME_LOOP
                th += EVT2_TIME_LOOP
            base = th
        elif kind <= np.uint32(1):
            dropped += 1
        elif (EVT2_UNKNOWN >> kind) & 1:  # EXT_TRIGGER, IMU, OTHERS, CONTINUED are skipped
            unknown += 1
    state[S_BASE] = base
    state[S_SHIFT] = shift
    state[S_DROPPED] += dropped
    state[S_UNKNOWN] += unknown
    return i, k


@njit(cache=True, nogil=True)
def _decode_evt3(words, out, state, width, height):
    """EVT 3.0 words (uint16 [n]) -> out (EVENT_DTYPE [m]); returns (words consumed,
    events written), stopping when `out` is full or before a vector word whose events do
    not fit. `state` int64 [STATE_SIZE] holds the time (loop, high, low, header base), row
    y, vector base x and polarity and the ERC words still to skip. Vector words emit
    base_x + bit for each set bit, then advance base_x by 12 / 8 (OpenEB's VECT_12_12_8
    triple gives the same on well-formed streams). A row outside the sensor, a row cleared
    by a type-1 word, or vectors before any VECT_BASE_X drop their events, as OpenEB does."""
    n = words.shape[0]
    i = min(n, state[S_SKIP])
    state[S_SKIP] -= i
    if not state[S_STARTED]:
        while i < n and words[i] >> 12 != 0x8:
            i += 1
            state[S_BEFORE] += 1
        if i == n:
            return n, 0
        state[S_STARTED] = 1
        state[S_HIGH] = words[i] & 0xFFF
        state[S_LOW] = 0
        i += 1
    # Only what ADDR_X / ADDR_Y words use lives in locals (registers); the rest stays in
    # `state`, and so do the counters, which these words rarely change.
    y = state[S_Y] if state[S_ROW_OK] else NO_ROW
    t_high = state[S_SHIFT] + (state[S_LOOP] << 24) + (state[S_HIGH] << 12)
    t = t_high + state[S_LOW]
    cap = out.shape[0]
    k = 0
    while i < n and k < cap:
        w = np.int64(words[np.uint64(i)])
        kind = w >> 12
        c = w & 0xFFF
        i += 1
        if kind | 2 == 2:  # EVT_ADDR_Y (0) or EVT_ADDR_X (2, one event), branch-free
            a = c & 0x7FF
            is_x = kind == 2
            ok = is_x & (y < height) & (a < width)
            e = out[np.uint64(k)]  # stored always, kept (k += 1) only for an event
            e.t = t
            e.x = a
            e.y = y
            e.p = c >> 11
            k += ok
            if is_x ^ ok:
                state[S_DROPPED] += 1
            y = y if is_x else a
        elif kind == 0x6:  # EVT_TIME_LOW (raw value, not clamped)
            t = t_high + c
        elif kind == 0x4 or kind == 0x5:  # VECT_12 / VECT_8
            nbits = 12 if kind == 0x4 else 8
            m = c & ((1 << nbits) - 1)
            bx = state[S_BX]
            keep = _in_sensor(m, bx, nbits, width) if y < height and state[S_HAS_BASE] else 0
            if cap - k < POP12[keep]:
                i -= 1
                break
            state[S_DROPPED] += POP12[m ^ keep]
            k = _emit(out, k, keep, t, bx, y, state[S_VPOL])
            state[S_BX] = bx + nbits
        elif kind == 0x3:  # VECT_BASE_X, and the VECT_12, VECT_12, VECT_8 usually after it
            bx = c & 0x7FF
            state[S_VPOL] = c >> 11
            state[S_HAS_BASE] = 1
            m = _triple(words, i, n)
            if m >= 0:  # same as word by word, with one dispatch instead of four
                keep = _in_sensor(m, bx, 32, width) if y < height else 0
                if cap - k >= _pop32(keep):
                    state[S_DROPPED] += _pop32(m ^ keep)
                    k = _emit(out, k, keep, t, bx, y, c >> 11)
                    bx += 32
                    i += 3
            state[S_BX] = bx
        elif kind == 0x8:  # EVT_TIME_HIGH: a new value resets TIME_LOW
            if c != state[S_HIGH]:
                if state[S_HIGH] >= c + EVT3_LOOP_DROP:
                    state[S_LOOP] += 1
                state[S_HIGH] = c
                t_high = state[S_SHIFT] + (state[S_LOOP] << 24) + (c << 12)
                t = t_high
        elif kind == 0xE:  # OTHERS: ERC counters carry CONTINUED_12, CONTINUED_12, CONTINUED_4
            if c == 0x014 or c == 0x016:
                state[S_SKIP] = max(0, i + 3 - n)
                i = min(n, i + 3)
        elif kind == 0x1:  # OpenEB: not a CD row (is_cd = false)
            y = NO_ROW
            state[S_UNKNOWN] += 1
        elif (EVT3_UNKNOWN >> kind) & 1:  # CONTINUED, EXT_TRIGGER, IMU are skipped
            state[S_UNKNOWN] += 1
    state[S_LOW] = t - t_high
    state[S_Y] = y
    state[S_ROW_OK] = y < height
    return i, k


# -- parallel whole-file decoding (read()) -------------------------------------------------
#
# The data words after the first TIME_HIGH are cut into segments. Pass 1 (one thread per
# segment) scans each segment without knowing the decoder state it starts in: its events,
# dropped events and unknown words, and what it does to the state. A short sequential step
# chains the segments, giving each its exact start state and output offset. Pass 2 decodes
# every segment with the serial kernel from that state straight into its slice of the
# output. Plan rows (int64 [segments + 1, PLAN_SIZE]): words lo..hi, output offset, event
# count, start state; the extra last row holds the total event count at P_OFF.
P_LO, P_HI, P_OFF, P_CNT, P_STATE = range(5)
PLAN_SIZE = P_STATE + STATE_SIZE
# EVT2 pass 1, per segment: events, CD words, unknown words, TIME_HIGH words, first and last
# TIME_HIGH value, time loops between its TIME_HIGH words.
R_CNT, R_CD, R_UNKNOWN, R_N_HIGH, R_FIRST_HIGH, R_HIGH, R_LOOPS = range(7)
# EVT3 pass 1, per segment (_scan_evt3): row, vector base (in and out), counts, the head to
# rescan, and the time summary read by _chain_evt3.
(Q_Y, Q_HAS_BASE, Q_BX, Q_VPOL, Q_CNT, Q_DROPPED, Q_UNKNOWN, Q_HEAD, Q_CNT_HEAD,
 Q_DROPPED_HEAD, Q_N_HIGH, Q_FIRST_HIGH, Q_HIGH, Q_LOOPS, Q_LOW_MODE, Q_LOW) = range(16)
Q_SIZE = 16
# TIME_LOW after an EVT3 segment: the incoming one, q[Q_LOW], or (after a first TIME_HIGH
# and nothing since that sets it) 0 if that TIME_HIGH changed the value, else the incoming
# one / q[Q_LOW].
LOW_IN, LOW_SET, LOW_FIRST_IN, LOW_FIRST_SET = range(4)


@njit(cache=True, nogil=True)
def _scan_evt2(words, width, height, r):
    """EVT2 pass 1 over a segment of `words` (after the first TIME_HIGH): fills r[R_*].
    Branch-free, so that it vectorizes; time loops are counted word by word only where
    the TIME_HIGH values span enough for one."""
    cnt = 0
    cd = 0
    unknown = 0
    n_high = 0
    lowest = np.int64(1) << 28
    highest = np.int64(-1)
    w_max = np.uint32(width)
    h_max = np.uint32(height)
    # uint32 sums over blocks of at most 2^24 words, which cannot overflow
    for start in range(0, words.shape[0], 1 << 24):
        block = words[start:start + (1 << 24)]
        b_cnt = np.uint32(0)
        b_cd = np.uint32(0)
        b_unknown = np.uint32(0)
        b_high = np.uint32(0)
        b_lowest = np.uint32(0xFFFFFFFF)
        b_highest = np.uint32(0)
        for i in range(block.shape[0]):
            w = block[i]
            kind = w >> np.uint32(28)
            is_cd = np.uint32(kind <= np.uint32(1))
            b_cd += is_cd
            b_cnt += is_cd & np.uint32(((w >> np.uint32(11)) & np.uint32(0x7FF)) < w_max) & (
                np.uint32((w & np.uint32(0x7FF)) < h_max))
            b_unknown += (np.uint32(EVT2_UNKNOWN) >> kind) & np.uint32(1)
            is_th = np.uint32(kind == np.uint32(0x8))
            b_high += is_th
            mask = np.uint32(0) - is_th  # all ones for a TIME_HIGH
            th = w & np.uint32(0xFFFFFFF)
            v = th | ~mask
            b_lowest = v if v < b_lowest else b_lowest
            v = th & mask
            b_highest = v if v > b_highest else b_highest
        cnt += b_cnt
        cd += b_cd
        unknown += b_unknown
        n_high += b_high
        if b_high:
            lowest = min(lowest, np.int64(b_lowest))
            highest = max(highest, np.int64(b_highest))
    r[R_CNT] = cnt
    r[R_CD] = cd
    r[R_UNKNOWN] = unknown
    r[R_N_HIGH] = n_high
    r[R_LOOPS] = 0
    if not n_high:
        return
    i = 0
    while words[i] >> 28 != 0x8:
        i += 1
    r[R_FIRST_HIGH] = words[i] & 0xFFFFFFF
    j = words.shape[0] - 1
    while words[j] >> 28 != 0x8:
        j -= 1
    r[R_HIGH] = words[j] & 0xFFFFFFF
    if (highest - lowest) << 6 >= EVT2_LOOP_DROP:
        high = r[R_FIRST_HIGH]
        for k in range(i + 1, j + 1):
            if words[k] >> 28 == 0x8:
                th = np.int64(words[k] & 0xFFFFFFF)
                if (high - th) << 6 >= EVT2_LOOP_DROP:
                    r[R_LOOPS] += 1
                high = th


@njit(cache=True, nogil=True, parallel=True)
def _plan_evt2(words, state, width, height, n_segments):
    """Pass 1 and chaining of the parallel EVT2 decode of all `words` from a fresh `state`
    (left as the serial decoder leaves it, counters included); returns the plan."""
    n = words.shape[0]
    f = 0
    while f < n and words[f] >> 28 != 0x8:
        f += 1
    state[S_BEFORE] += f
    if f == n:
        return np.zeros((1, PLAN_SIZE), np.int64)
    state[S_STARTED] = 1
    start = f + 1
    segs = max(1, min(n_segments, n - start))
    r = np.zeros((segs, 7), np.int64)
    for s in prange(segs):
        _scan_evt2(words[start + (n - start) * s // segs:start + (n - start) * (s + 1) // segs],
                   width, height, r[s])
    plan = np.zeros((segs + 1, PLAN_SIZE), np.int64)
    high = np.int64(words[f] & 0xFFFFFFF)
    shift = state[S_SHIFT]
    off = 0
    for s in range(segs):
        state[S_BASE] = (high << 6) + shift
        state[S_SHIFT] = shift
        plan[s, P_LO] = start + (n - start) * s // segs
        plan[s, P_HI] = start + (n - start) * (s + 1) // segs
        plan[s, P_OFF] = off
        plan[s, P_CNT] = r[s, R_CNT]
        plan[s, P_STATE:] = state
        off += r[s, R_CNT]
        state[S_DROPPED] += r[s, R_CD] - r[s, R_CNT]
        state[S_UNKNOWN] += r[s, R_UNKNOWN]
        if r[s, R_N_HIGH]:
            if (high - r[s, R_FIRST_HIGH]) << 6 >= EVT2_LOOP_DROP:
                shift += EVT2_TIME_LOOP
            shift += r[s, R_LOOPS] * EVT2_TIME_LOOP
            high = r[s, R_HIGH]
    state[S_BASE] = (high << 6) + shift
    state[S_SHIFT] = shift
    plan[segs, P_OFF] = off
    return plan


@njit(cache=True, nogil=True)
def _scan_evt3(words, lo, hi, width, height, q):
    """EVT3 pass 1 over words[lo:hi], parsed from lo with no ERC word pending. q[Q_Y] (y,
    NO_ROW or ROW_UNKNOWN), q[Q_HAS_BASE] (0, 1 or -1: unknown), q[Q_BX] and q[Q_VPOL] give
    the incoming row and vector base and are left as the segment leaves them (an unknown
    base: q[Q_BX] is the advance). Counts events, dropped events and unknown words;
    events that depend on an unknown incoming row or base are not counted: q[Q_HEAD] is
    the index after the last such word, q[Q_CNT_HEAD] / q[Q_DROPPED_HEAD] the counts
    before it, so a rescan of words[lo:q[Q_HEAD]] from the true state completes them."""
    y = q[Q_Y]
    has_base = q[Q_HAS_BASE]
    bx = q[Q_BX]
    vpol = q[Q_VPOL]
    cnt = 0
    dropped = 0
    unknown = 0
    head = lo
    cnt_head = 0
    dropped_head = 0
    n_high = 0
    first_high = 0
    high = 0
    loops = 0
    low_mode = LOW_IN
    low = 0
    i = lo
    while i < hi:
        w = np.int64(words[np.uint64(i)])
        kind = w >> 12
        c = w & 0xFFF
        i += 1
        if kind | 2 == 2:  # EVT_ADDR_Y / EVT_ADDR_X, as in _decode_evt3
            a = c & 0x7FF
            is_x = kind == 2
            ok = is_x & (y < height) & (a < width)
            cnt += ok
            if is_x ^ ok:
                if y == ROW_UNKNOWN and a < width:
                    head = i
                    cnt_head = cnt
                    dropped_head = dropped
                else:
                    dropped += 1
            y = y if is_x else a
        elif kind == 0x6:
            low_mode = LOW_SET
            low = c
        elif kind == 0x4 or kind == 0x5:
            nbits = 12 if kind == 0x4 else 8
            m = c & ((1 << nbits) - 1)
            if m:
                if y < height and has_base == 1:
                    keep = _in_sensor(m, bx, nbits, width)
                    cnt += POP12[keep]
                    dropped += POP12[m ^ keep]
                elif has_base != 0 and (y == ROW_UNKNOWN or (y < height and has_base < 0)):
                    head = i
                    cnt_head = cnt
                    dropped_head = dropped
                else:
                    dropped += POP12[m]
            bx += nbits
        elif kind == 0x3:
            bx = c & 0x7FF
            vpol = c >> 11
            has_base = 1
            m = _triple(words, i, hi)
            if m >= 0:
                i += 3
                if y < height:
                    keep = _in_sensor(m, bx, 32, width)
                    cnt += _pop32(keep)
                    dropped += _pop32(m ^ keep)
                elif y == ROW_UNKNOWN and m:
                    head = i
                    cnt_head = cnt
                    dropped_head = dropped
                else:
                    dropped += _pop32(m)
                bx += 32
        elif kind == 0x8:
            if n_high == 0:
                first_high = c
                high = c
                low_mode = LOW_FIRST_IN if low_mode == LOW_IN else LOW_FIRST_SET
            elif c != high:
                if high >= c + EVT3_LOOP_DROP:
                    loops += 1
                high = c
                low_mode = LOW_SET
                low = 0
            n_high += 1
        elif kind == 0xE:
            if c == 0x014 or c == 0x016:
                i = min(hi, i + 3)
        elif kind == 0x1:
            y = NO_ROW
            unknown += 1
        elif (EVT3_UNKNOWN >> kind) & 1:
            unknown += 1
    q[Q_Y] = y
    q[Q_HAS_BASE] = has_base
    q[Q_BX] = bx
    q[Q_VPOL] = vpol
    q[Q_CNT] = cnt
    q[Q_DROPPED] = dropped
    q[Q_UNKNOWN] = unknown
    q[Q_HEAD] = head
    q[Q_CNT_HEAD] = cnt_head
    q[Q_DROPPED_HEAD] = dropped_head
    q[Q_N_HIGH] = n_high
    q[Q_FIRST_HIGH] = first_high
    q[Q_HIGH] = high
    q[Q_LOOPS] = loops
    q[Q_LOW_MODE] = low_mode
    q[Q_LOW] = low


@njit(cache=True, nogil=True)
def _chain_evt3(state, q, height):
    """Advance the decoder `state` over a segment summarised (from an unknown start) by q."""
    if q[Q_Y] != ROW_UNKNOWN:
        state[S_Y] = q[Q_Y]
        state[S_ROW_OK] = q[Q_Y] < height
    if q[Q_HAS_BASE] == 1:
        state[S_BX] = q[Q_BX]
        state[S_VPOL] = q[Q_VPOL]
        state[S_HAS_BASE] = 1
    else:
        state[S_BX] += q[Q_BX]
    mode = q[Q_LOW_MODE]
    if q[Q_N_HIGH]:
        changed = q[Q_FIRST_HIGH] != state[S_HIGH]
        if state[S_HIGH] >= q[Q_FIRST_HIGH] + EVT3_LOOP_DROP:
            state[S_LOOP] += 1
        state[S_LOOP] += q[Q_LOOPS]
        state[S_HIGH] = q[Q_HIGH]
        if mode == LOW_FIRST_IN or mode == LOW_FIRST_SET:
            if changed:
                state[S_LOW] = 0
            elif mode == LOW_FIRST_SET:
                state[S_LOW] = q[Q_LOW]
            return
    if mode == LOW_SET:
        state[S_LOW] = q[Q_LOW]


@njit(cache=True, nogil=True)
def _erc_pending(words, b, start):
    """Whether one of the 3 words before index b (from `start` on) is an ERC counter word,
    so that b may lie among the words it skips."""
    for j in range(max(start, b - 3), b):
        if words[j] == ERC_WORDS[0] or words[j] == ERC_WORDS[1]:
            return True
    return False


@njit(cache=True, nogil=True, parallel=True)
def _plan_evt3(words, state, width, height, n_segments):
    """Pass 1 and chaining of the parallel EVT3 decode of all `words` from a fresh `state`
    (left as the serial decoder leaves it, counters included); returns the plan. Segment
    boundaries avoid the 3 words after an ERC counter word, so each segment parses from
    its first word; the words of a segment before its last event that depends on the
    incoming row or vector base (usually a few) are counted again from the true state."""
    n = words.shape[0]
    f = 0
    while f < n and words[f] >> 12 != 0x8:
        f += 1
    state[S_BEFORE] += f
    if f == n:
        return np.zeros((1, PLAN_SIZE), np.int64)
    state[S_STARTED] = 1
    state[S_HIGH] = words[f] & 0xFFF
    state[S_LOW] = 0
    start = f + 1
    segs = max(1, min(n_segments, n - start))
    bounds = np.empty(segs + 1, np.int64)
    bounds[0] = start
    bounds[segs] = n
    for s in range(1, segs):
        b = max(bounds[s - 1], start + (n - start) * s // segs)
        while b < n and _erc_pending(words, b, start):
            b += 1
        bounds[s] = b
    q = np.zeros((segs, Q_SIZE), np.int64)
    for s in prange(segs):
        q[s, Q_Y] = ROW_UNKNOWN
        q[s, Q_HAS_BASE] = -1
        _scan_evt3(words, bounds[s], bounds[s + 1], width, height, q[s])
    plan = np.zeros((segs + 1, PLAN_SIZE), np.int64)
    head = np.empty(Q_SIZE, np.int64)
    off = 0
    for s in range(segs):
        lo = bounds[s]
        plan[s, P_LO] = lo
        plan[s, P_HI] = bounds[s + 1]
        plan[s, P_OFF] = off
        plan[s, P_STATE:] = state
        cnt = q[s, Q_CNT] - q[s, Q_CNT_HEAD]
        dropped = q[s, Q_DROPPED] - q[s, Q_DROPPED_HEAD]
        if q[s, Q_HEAD] > lo:
            head[:] = 0
            head[Q_Y] = state[S_Y] if state[S_ROW_OK] else NO_ROW
            head[Q_HAS_BASE] = state[S_HAS_BASE]
            head[Q_BX] = state[S_BX]
            head[Q_VPOL] = state[S_VPOL]
            _scan_evt3(words, lo, q[s, Q_HEAD], width, height, head)
            cnt += head[Q_CNT]
            dropped += head[Q_DROPPED]
        plan[s, P_CNT] = cnt
        off += cnt
        state[S_DROPPED] += dropped
        state[S_UNKNOWN] += q[s, Q_UNKNOWN]
        _chain_evt3(state, q[s], height)
    plan[segs, P_OFF] = off
    return plan


@njit(cache=True, nogil=True, parallel=True)
def _fill_evt2(words, out, plan, width, height):
    """Pass 2: each plan segment decoded from its start state into its slice of `out`;
    returns whether every segment gave the planned event count."""
    segs = plan.shape[0] - 1
    good = np.zeros(segs, np.bool_)
    for s in prange(segs):
        off = plan[s, P_OFF]
        cnt = plan[s, P_CNT]
        _, k = _decode_evt2(words[plan[s, P_LO]:plan[s, P_HI]], out[off:off + cnt],
                            plan[s, P_STATE:].copy(), width, height)
        good[s] = k == cnt
    return good.all()


@njit(cache=True, nogil=True, parallel=True)
def _fill_evt3(words, out, plan, width, height):
    """Pass 2 of the EVT3 decode, as _fill_evt2."""
    segs = plan.shape[0] - 1
    good = np.zeros(segs, np.bool_)
    for s in prange(segs):
        off = plan[s, P_OFF]
        cnt = plan[s, P_CNT]
        _, k = _decode_evt3(words[plan[s, P_LO]:plan[s, P_HI]], out[off:off + cnt],
                            plan[s, P_STATE:].copy(), width, height)
        good[s] = k == cnt
    return good.all()


def _header_version(fields: dict) -> str | None:
    """'2.0', '3.0', ... from `% format EVTx` (preferred, as OpenEB) or `% evt x`."""
    if "format" in fields:
        name = fields["format"].split(";")[0].strip().upper()
        return _FORMAT_VERSION.get(name, name)
    return fields.get("evt")


def _fields(lines: list[str]) -> dict:
    fields = {}
    for line in lines:
        key, _, value = line.strip().partition(" ")
        fields[key] = value.strip()
    return fields


def _sniff_fields(head: bytes) -> dict:
    """Header fields of the leading '% ' lines of `head` (up to '% end')."""
    lines, pos = [], 0
    while head.startswith(b"% ", pos):
        nl = head.find(b"\n", pos)
        if nl < 0:
            break
        line = head[pos + 2:nl].decode("latin-1").rstrip("\r")
        if line.strip() == "end":
            break
        lines.append(line)
        pos = nl + 1
    return _fields(lines)


def _system_id(fields: dict) -> int | None:
    try:
        return int(fields.get("system_ID", ""))
    except ValueError:
        return None


class _RawReader(EventReader):
    """Shared header parsing and block loop of the EVT readers."""

    extensions = (".raw",)
    version = ""        # '2.0' / '3.0'
    word_bytes = 0
    word_dtype = ""
    max_per_word = 1    # most events one word can emit
    _kernel = None      # Numba kernel (words, out, state, width, height) -> (used, written)
    _plan = None        # parallel read, passes 1 + chaining -> plan (see P_*)
    _fill = None        # parallel read, pass 2 -> whether the counts matched
    parallel_min_words = 1 << 18  # read() of fewer data words decodes serially
    parallel_segments = 0         # segments of a parallel read(); 0: one per Numba thread

    @classmethod
    def sniff(cls, head: bytes) -> int:
        fields = _sniff_fields(head)
        version = _header_version(fields)
        if version is not None:
            return 2 if version == cls.version else 0
        sid = _system_id(fields)
        if sid in SYSTEM_ID:
            return 1 if SYSTEM_ID[sid][1] == cls.version else 0
        return 1 if "plugin_name" in fields or "system_ID" in fields else 0

    def _open(self) -> None:
        lines, pos = parse_percent_header(self)
        fields = _fields(lines)
        sid = _system_id(fields)
        version = _header_version(fields)
        if version is None and sid in SYSTEM_ID:
            version = SYSTEM_ID[sid][1]
        if version is not None and version != self.version:
            raise self.error(f"the header says EVT {version}; this reader decodes EVT "
                             f"{self.version}", offset=0)
        base = fields.get("evpipe_time_base_us", "0")
        if not re.fullmatch(r"-?\d{1,19}", base) or not -(1 << 63) <= int(base) < 1 << 63:
            raise self.error(f"bad evpipe_time_base_us {base!r}", offset=0)
        self.time_base = int(base)
        self.sensor_size, source = self._geometry(fields, sid)
        self.data_offset = pos
        self.n_words = (self.file_size - pos) // self.word_bytes
        self.metadata = {"header": lines, "fields": fields, "encoding": f"EVT {self.version}",
                         "geometry": source}

    def _geometry(self, fields: dict, sid: int | None) -> tuple[SensorSize, str]:
        size, source = None, ""
        if "geometry" in fields:
            m = re.fullmatch(r"(\d+)x(\d+)", fields["geometry"])
            if not m:
                raise self.error(f"bad geometry {fields['geometry']!r}", offset=0)
            size, source = (int(m.group(1)), int(m.group(2))), "header geometry"
        elif "format" in fields:
            opts = dict(p.partition("=")[::2] for p in fields["format"].split(";")[1:])
            if "width" in opts or "height" in opts:
                try:
                    size = int(opts["width"]), int(opts["height"])
                except (KeyError, ValueError):
                    raise self.error(f"bad format geometry {fields['format']!r}",
                                     offset=0) from None
                source = "header format"
        if size is not None:
            if not (0 < size[0] <= 65536 and 0 < size[1] <= 65536):
                raise self.error(f"geometry {size[0]}x{size[1]} out of range", offset=0)
            return SensorSize(*size), source
        plugin = fields.get("plugin_name")
        if plugin in PLUGIN_GEOMETRY:
            return PLUGIN_GEOMETRY[plugin], f"plugin_name {plugin}"
        if sid in SYSTEM_ID:
            return SYSTEM_ID[sid][0], f"system_ID {sid}"
        w, h = DEFAULT_GEOMETRY
        return DEFAULT_GEOMETRY, (f"assumed {w}x{h}: no geometry, format size, known "
                                  "plugin_name or system_ID in the header")

    def _state(self) -> np.ndarray:
        state = np.zeros(STATE_SIZE, np.int64)
        state[S_SHIFT] = self.time_base
        return state

    def _words(self):
        """(uint words) blocks of the data section."""
        for _, buf in self.byte_blocks(self.data_offset, align=self.word_bytes):
            yield buf[:len(buf) - len(buf) % self.word_bytes].view(self.word_dtype)

    def _finish(self, state: np.ndarray) -> None:
        """Record the pass's counters in metadata and report problems once."""
        self.metadata.update(dropped_events=int(state[S_DROPPED]),
                             unknown_words=int(state[S_UNKNOWN]),
                             words_before_time_high=int(state[S_BEFORE]))
        w, h = self.sensor_size
        if state[S_DROPPED]:
            self.warn(f"{state[S_DROPPED]} events outside the {w}x{h} sensor (or without a "
                      "valid row / vector base) dropped")
        if state[S_UNKNOWN]:
            self.warn(f"{state[S_UNKNOWN]} words of unknown type skipped")
        extra = (self.file_size - self.data_offset) % self.word_bytes
        if extra:
            self.warn(f"{extra} trailing bytes are not a whole {self.word_bytes}-byte word; "
                      "ignored", offset=self.file_size - extra)

    def _decode(self):
        state = self._state()
        w, h = self.sensor_size
        cap = max(self.block_events, self.max_per_word)
        for words in self._words():
            i = 0
            while i < len(words):
                out = np.empty(min(cap, self.max_per_word * (len(words) - i)), EVENT_DTYPE)
                di, k = self._kernel(words[i:], out, state, w, h)
                i += di
                yield out[:k]
        self._finish(state)

    def read(self) -> np.ndarray:
        """All events. With more than one Numba thread (or `parallel_segments` > 1) and
        at least `parallel_min_words` words, decoded in parallel; otherwise serially, straight into one array sized by the word count (EVT2:
        at most one event per word; EVT3: doubled when vectors overflow it)."""
        segments = self.parallel_segments or get_num_threads()
        if segments > 1 and self.n_words >= max(1, self.parallel_min_words):
            return self._read_parallel(segments)
        state = self._state()
        w, h = self.sensor_size
        out = np.empty(self.n_words, EVENT_DTYPE)
        k = 0
        for words in self._words():
            i = 0
            while True:
                di, dk = self._kernel(words[i:], out[k:], state, w, h)
                i += di
                k += dk
                if i == len(words):
                    break
                grown = np.empty(2 * len(out) + self.max_per_word, EVENT_DTYPE)
                # bytes: numpy copies the packed EVENT_DTYPE field by field, ~10x slower
                grown[:k].view(np.uint8)[:] = out[:k].view(np.uint8)
                out = grown
        self._finish(state)
        out.resize(k, refcheck=False)  # shrinks in place; no view of `out` is alive
        return out

    def _read_parallel(self, segments: int) -> np.ndarray:
        """read() on `segments` segments of the data words, read into memory first (not
        memory-mapped: a file truncated by another process would kill the interpreter
        with SIGBUS)."""
        words = np.empty(self.n_words, self.word_dtype)
        raw = words.view(np.uint8)
        threads = max(1, min(segments, get_num_threads()))
        cuts = [s * len(raw) // threads for s in range(threads + 1)]

        def load(s: int) -> int:
            """Bytes copied into part s (each thread copies and page-faults its own part;
            Linux returns at most ~2 GiB per call)."""
            pos, end = cuts[s], cuts[s + 1]
            while pos < end:
                got = os.preadv(self._f.fileno(), [memoryview(raw)[pos:end]],
                                self.data_offset + pos)
                if got <= 0:
                    break
                pos += got
            return pos - cuts[s]

        with ThreadPoolExecutor(threads) as pool:
            if sum(pool.map(load, range(threads))) != len(raw):
                raise self.error("file shrank while being read", offset=self.data_offset)
        words.flags.writeable = False  # one compiled signature (read-only words)
        state = self._state()
        w, h = self.sensor_size
        plan = self._plan(words, state, w, h, segments)
        out = np.empty(plan[-1, P_OFF], EVENT_DTYPE)
        if not self._fill(words, out, plan, w, h):
            raise RuntimeError(f"{self.path}: parallel EVT decode disagrees with its plan")
        self._finish(state)
        return out


@FORMATS.register("evt2")
class Evt2Reader(_RawReader):
    """Prophesee RAW EVT 2.0: 32-bit LE words, type in bits 28-31 (formats.md section 3)."""

    format = "evt2"
    version = "2.0"
    word_bytes = 4
    word_dtype = "<u4"
    max_per_word = 1
    _kernel = staticmethod(_decode_evt2)
    _plan = staticmethod(_plan_evt2)
    _fill = staticmethod(_fill_evt2)


@FORMATS.register("evt3")
class Evt3Reader(_RawReader):
    """Prophesee RAW EVT 3.0: 16-bit LE stateful words, type in bits 12-15 (formats.md
    section 4)."""

    format = "evt3"
    version = "3.0"
    word_bytes = 2
    word_dtype = "<u2"
    max_per_word = 12
    _kernel = staticmethod(_decode_evt3)
    _plan = staticmethod(_plan_evt3)
    _fill = staticmethod(_fill_evt3)


# -- writers -------------------------------------------------------------------------------

# Encoder state (int64 [6]): next event, started, loops emitted, current TIME_HIGH value,
# current TIME_LOW (EVT3), current row y (EVT3, -1 = none).
E_POS, E_STARTED, E_LOOP, E_HIGH, E_LOW, E_Y = range(6)
EVT2_HIGH_MAX = (1 << 28) - 1


@njit(cache=True, nogil=True)
def _encode_evt2(events, base, out, state):
    """Events (EVENT_DTYPE, t - base in [0, 2^54), periods (t - base) >> 34 non-decreasing)
    -> EVT 2.0 words in out (uint32 [m], m >= 2); returns the words written. TIME_HIGH words
    move the reader's clock as evt2_decoder.h reads them: a loop is TIME_HIGH max then 0,
    and a backward step that a reader would take for a loop is split in two."""
    n = events.shape[0]
    cap = out.shape[0]
    pos = state[E_POS]
    started = state[E_STARTED]
    loop = state[E_LOOP]
    cur = state[E_HIGH]
    j = 0
    while pos < n and cap - j >= 2:
        e = events[pos]
        rel = e.t - base
        period = rel >> 34
        th = (rel >> 6) & EVT2_HIGH_MAX
        if not started:
            cur = th if period == 0 else EVT2_HIGH_MAX
            out[j] = (0x8 << 28) | cur
            j += 1
            started = 1
        elif loop < period:
            if cur != EVT2_HIGH_MAX:
                out[j] = (0x8 << 28) | EVT2_HIGH_MAX
                j += 1
            out[j] = 0x8 << 28
            j += 1
            loop += 1
            cur = 0
        elif th != cur:
            if (cur - th) << 6 >= EVT2_LOOP_DROP:
                cur -= 1 << 27
            else:
                cur = th
            out[j] = (0x8 << 28) | cur
            j += 1
        else:
            out[j] = ((np.int64(e.p) << 28) | ((rel & 0x3F) << 22) | (np.int64(e.x) << 11)
                      | np.int64(e.y))
            j += 1
            pos += 1
    state[E_POS] = pos
    state[E_STARTED] = started
    state[E_LOOP] = loop
    state[E_HIGH] = cur
    return j


@njit(cache=True, nogil=True)
def _encode_evt3(events, base, width, out, state):
    """Events (EVENT_DTYPE, t - base in [0, 2^44), periods (t - base) >> 24 non-decreasing)
    -> EVT 3.0 words in out (uint16 [m], m >= 4); returns the words written. Runs of 4 or
    more events with equal t, y, p and rising x within 32 columns become VECT_BASE_X +
    VECT_12 + VECT_12 + VECT_8 (the triple OpenEB expects, base + 32 <= width); others
    EVT_ADDR_X. TIME_HIGH steps mirror evt3_decoder.h's loop rule."""
    n = events.shape[0]
    cap = out.shape[0]
    pos = state[E_POS]
    started = state[E_STARTED]
    loop = state[E_LOOP]
    high = state[E_HIGH]
    low = state[E_LOW]
    y = state[E_Y]
    j = 0
    while pos < n and cap - j >= 4:
        e = events[pos]
        rel = e.t - base
        period = rel >> 24
        hi = (rel >> 12) & 0xFFF
        lo = rel & 0xFFF
        if not started:
            high = hi if period == 0 else 0xFFF
            low = 0
            out[j] = (0x8 << 12) | high
            j += 1
            started = 1
        elif loop < period:
            if high != 0xFFF:
                out[j] = (0x8 << 12) | 0xFFF
                j += 1
            out[j] = 0x8 << 12
            j += 1
            loop += 1
            high = 0
            low = 0
        elif hi != high:
            high = high - (EVT3_LOOP_DROP - 1) if high >= hi + EVT3_LOOP_DROP else hi
            low = 0
            out[j] = (0x8 << 12) | high
            j += 1
        elif lo != low:
            low = lo
            out[j] = (0x6 << 12) | low
            j += 1
        elif e.y != y:
            y = e.y
            out[j] = y
            j += 1
        else:
            x0 = np.int64(e.x)
            p = np.int64(e.p)
            q = pos + 1
            bx = 0
            mask = np.int64(0)
            if width >= 32:
                bx = min(x0, width - 32)
                mask = np.int64(1) << (x0 - bx)
                last = x0
                while q < n:
                    f = events[q]
                    if f.t != e.t or f.y != e.y or f.p != e.p or f.x <= last or f.x >= bx + 32:
                        break
                    last = np.int64(f.x)
                    mask |= np.int64(1) << (last - bx)
                    q += 1
            if q - pos >= 4:
                out[j] = (0x3 << 12) | (p << 11) | bx
                out[j + 1] = (0x4 << 12) | (mask & 0xFFF)
                out[j + 2] = (0x4 << 12) | ((mask >> 12) & 0xFFF)
                out[j + 3] = (0x5 << 12) | ((mask >> 24) & 0xFF)
                j += 4
                pos = q
            else:
                out[j] = (0x2 << 12) | (p << 11) | x0
                j += 1
                pos += 1
    state[E_POS] = pos
    state[E_STARTED] = started
    state[E_LOOP] = loop
    state[E_HIGH] = high
    state[E_LOW] = low
    state[E_Y] = y
    return j


def _time_base(t: np.ndarray, period_bits: int, name: str) -> int:
    """Base (a multiple of 2^period_bits us at or below min(t)) for a writer; raises
    ConfigError when a later event falls in an earlier time loop than one before it (a
    reader's loop counter only counts up) or the span needs more than MAX_LOOPS loops."""
    if not len(t):
        return 0
    base = int(t.min()) - int(t.min()) % (1 << period_bits)
    if (int(t.max()) - base) >> period_bits >= MAX_LOOPS:
        raise ConfigError(f"{name}: time span {int(t.max()) - int(t.min())} us needs more than "
                          f"{MAX_LOOPS} time loops of 2^{period_bits} us")
    back = np.flatnonzero(np.diff((t - base) >> period_bits) < 0)
    if len(back):
        raise ConfigError(f"{name}: event {back[0] + 1} (t={int(t[back[0] + 1])}) lies in an "
                          f"earlier 2^{period_bits}-us time loop than event {back[0]} "
                          f"(t={int(t[back[0]])}); {name} readers cannot go back a loop")
    return base


def _header(version: str, fmt: str, size: SensorSize, base: int) -> bytes:
    w, h = size
    if w > MAX_ADDRESS or h > MAX_ADDRESS:
        raise ConfigError(f"{fmt} addresses are 11 bits: sensor_size {w}x{h} exceeds "
                          f"{MAX_ADDRESS}x{MAX_ADDRESS}")
    return (f"% evt {version}\n% format {fmt};height={h};width={w}\n% geometry {w}x{h}\n"
            + (f"% evpipe_time_base_us {base}\n" if base else "") + "% end\n").encode()


@WRITERS.register("evt2")
def write_evt2(path, events: np.ndarray, sensor_size: SensorSize) -> None:
    """EVT 2.0 with `% evt 2.0`, `% format EVT2;height=H;width=W`, `% geometry WxH`, `% end`.
    Events keep their order and exact timestamps: TIME_HIGH words go backwards where the
    events do. Time is stored relative to a multiple of 2^34 us (`% evpipe_time_base_us`
    when not 0); since readers count 2^34-us loops upwards only, an event may not fall in
    an earlier loop than one before it (ConfigError), which sorted events never do."""
    base = _time_base(events["t"], 34, "EVT2")
    header = _header("2.0", "EVT2", sensor_size, base)
    state = np.zeros(6, np.int64)
    buf = np.empty(1 << 20, "<u4")
    with open(path, "wb") as f:
        f.write(header)
        while state[E_POS] < len(events):
            f.write(buf[:_encode_evt2(events, base, buf, state)].tobytes())


@WRITERS.register("evt3")
def write_evt3(path, events: np.ndarray, sensor_size: SensorSize) -> None:
    """EVT 3.0 with `% evt 3.0`, `% format EVT3;height=H;width=W`, `% geometry WxH`, `% end`.
    Same time policy as `write_evt2` with 2^24-us loops (OpenEB's EVT3 loop rule)."""
    base = _time_base(events["t"], 24, "EVT3")
    header = _header("3.0", "EVT3", sensor_size, base)
    state = np.zeros(6, np.int64)
    state[E_Y] = -1
    buf = np.empty(1 << 20, "<u2")
    with open(path, "wb") as f:
        f.write(header)
        while state[E_POS] < len(events):
            f.write(buf[:_encode_evt3(events, base, sensor_size.width, buf, state)].tobytes())
