"""SAR radiometry: from stored values to the codec's [0, 1] domain and back, exactly.

Forward (per band)::

    stored value --kind--> linear intensity I --floor--> dB = 10 log10(max(I, floor))
        --clip [lo, hi]--> v = (dB - lo) / (hi - lo)  in [0, 1]

Input kinds:

=============  ==========================================  ==========================
kind           stored value                                intensity I
=============  ==========================================  ==========================
``intensity``  linear power (sigma0, beta0 or DN^2)        x
``amplitude``  sqrt of power                               x^2
``dn``         Sentinel-1 GRD digital number (amplitude)   x^2 (native GRD scaling)
``db``         10 log10(power)                             10^(x/10)
=============  ==========================================  ==========================

Invalid pixels -- NaN, +-inf, ``nodata``, and values <= 0 for the linear kinds -- become a mask
(kept losslessly by the container) and are filled with ``fill`` in the [0, 1] domain so that the
network sees no spike. The inverse maps [0, 1] back to the input kind; within the clip range and
above the noise floor it is exact up to float64 rounding (<< 1e-4 dB).

Clip bounds come from per-band percentiles (VV and VH differ by 6-8 dB, so each band gets its own).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

KINDS = ("intensity", "amplitude", "dn", "db")
LINEAR_KINDS = ("intensity", "amplitude", "dn")
# Used when a band has no valid pixel at all (e.g. a scene-border tile): typical S1 sigma0 range.
DEFAULT_LO_DB, DEFAULT_HI_DB = -30.0, 10.0


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise InputError(f"unknown input kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def check_array(x: Any, name: str = "input") -> np.ndarray:
    """Validate an input raster: numeric real dtype, non-empty, 2-D or 3-D (bands first)."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as e:  # pragma: no cover - exotic objects
            raise InputError(f"{name}: cannot convert to an array ({e})") from e
    if np.iscomplexobj(x):
        raise InputError(f"{name}: complex values (SLC?): convert to intensity |z|^2 first (np.abs(z) ** 2)")
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise InputError(f"{name}: unsupported dtype {x.dtype} (need an integer or float raster)")
    if x.ndim not in (2, 3):
        raise InputError(f"{name}: expected a 2-D raster or a (bands, rows, cols) stack, got shape {x.shape}")
    if x.size == 0 or min(x.shape) == 0:
        raise InputError(f"{name}: empty raster, shape {x.shape}")
    return x


def check_representable(sample: np.ndarray, kind: str, nodata: float | None, name: str = "input") -> None:
    """Refuse values the kind cannot represent (InputError, exit 3, with a hint), instead of
    coding them as invalid and decoding an all-NaN raster. Linear kinds: no valid (> 0, finite)
    value at all, or more than 5% of the finite values negative (sigma0 after thermal-noise
    removal has a few small negatives; dB data is almost all negative). Values declared nodata
    do not count."""
    x = np.asarray(sample).reshape(-1)  # real: check_array and compress_file refuse complex input
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        x = x[x != nodata]
    if np.issubdtype(x.dtype, np.floating):
        x = x[np.isfinite(x)]
    if x.size == 0:
        return  # nothing valid: an all-nodata band is coded as a mask (a scene border tile)
    if kind in LINEAR_KINDS:
        neg = float(np.mean(x < 0))
        if neg > 0.05:
            raise InputError(f"{name}: {100 * neg:.0f}% of the values are negative, which {kind} values cannot be: "
                             "is this dB? use --kind db (kind='db'); or, if they mark missing data, declare that "
                             "value with --nodata V (nodata=V)")
        if not np.any(x > 0):
            raise InputError(f"{name}: no positive value: {kind} data needs values > 0 "
                             "(all zero? use nodata=0 if 0 means no data; dB data: --kind db)")


OUTPUT_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")


def check_output_dtype(dtype: Any) -> np.dtype | None:
    """An output dtype a GeoTIFF can hold (InputError otherwise); None stays None."""
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise InputError(f"unknown output dtype {dtype!r}; choose from {', '.join(OUTPUT_DTYPES)}") from e
    if dt.name not in OUTPUT_DTYPES:
        raise InputError(f"output dtype {dt.name} is not supported; choose from {', '.join(OUTPUT_DTYPES)}")
    return dt


def check_nodata(nodata: Any) -> float | None:
    """nodata is a number (NaN allowed) or None."""
    if nodata is None:
        return None
    if isinstance(nodata, bool) or not isinstance(nodata, (int, float, np.integer, np.floating)):
        raise InputError(f"nodata must be a number or None, got {nodata!r}")
    return float(nodata)


def to_intensity(x: np.ndarray, kind: str) -> np.ndarray:
    """Stored values -> linear intensity (float64). Invalid values pass through as they are."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "intensity":
        return x
    if kind in ("amplitude", "dn"):
        return np.where(x > 0, x * x, x)  # keep sign so that <= 0 stays invalid
    if kind == "db":
        with np.errstate(over="ignore"):
            return np.power(10.0, x / 10.0)
    raise InputError(f"unknown input kind {kind!r}")


def from_intensity(intensity: np.ndarray, kind: str) -> np.ndarray:
    """Linear intensity -> stored values of ``kind`` (float64)."""
    if kind == "intensity":
        return intensity
    if kind in ("amplitude", "dn"):
        return np.sqrt(intensity)
    if kind == "db":
        return 10.0 * np.log10(intensity)
    raise InputError(f"unknown output kind {kind!r}")


def invalid_mask(x: np.ndarray, kind: str, nodata: float | None) -> np.ndarray:
    """True where a pixel carries no measurement."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
    else:
        bad = np.zeros(x.shape, dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        bad |= x == nodata
    if kind in LINEAR_KINDS:
        with np.errstate(invalid="ignore"):
            bad |= ~(x > 0)
    return bad


@dataclass
class Radiometry:
    """Parameters of one band's forward/inverse mapping. Serialised into every container."""

    kind: str = "intensity"
    lo_db: float = DEFAULT_LO_DB
    hi_db: float = DEFAULT_HI_DB
    noise_floor_db: float | None = None
    nodata: float | None = None
    fill: float = 0.0  # fill value in the [0, 1] domain for invalid pixels

    def __post_init__(self) -> None:
        check_kind(self.kind)
        for name in ("lo_db", "hi_db"):
            if not math.isfinite(getattr(self, name)):
                raise InputError(f"radiometry: {name} must be finite")
        if not self.hi_db > self.lo_db:
            raise InputError(f"radiometry: hi_db ({self.hi_db}) must exceed lo_db ({self.lo_db})")
        if not 0.0 <= self.fill <= 1.0:
            raise InputError("radiometry: fill must lie in [0, 1]")

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["nodata"] is not None and isinstance(d["nodata"], float) and math.isnan(d["nodata"]):
            d["nodata"] = "nan"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Radiometry":
        d = dict(d)
        if d.get("nodata") == "nan":
            d["nodata"] = float("nan")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    # -- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        kind: str = "intensity",
        *,
        nodata: float | None = None,
        low_pct: float = 0.1,
        high_pct: float = 99.9,
        noise_floor_db: float | None = None,
        max_samples: int = 2_000_000,
    ) -> "Radiometry":
        """Clip bounds from the band's own percentiles (in dB) of its valid pixels."""
        check_kind(kind)
        x = check_array(x)
        if x.ndim != 2:
            raise InputError("Radiometry.fit takes one band (2-D); fit each band separately")
        if not 0.0 <= low_pct < high_pct <= 100.0:
            raise InputError(f"percentiles must satisfy 0 <= low < high <= 100, got {low_pct}, {high_pct}")
        flat = x.reshape(-1)
        if flat.size > max_samples:  # deterministic subsample: percentiles of huge scenes
            flat = flat[:: int(math.ceil(flat.size / max_samples))]
        bad = invalid_mask(flat, kind, nodata)
        valid = flat[~bad]
        if valid.size == 0:
            return cls(kind=kind, noise_floor_db=noise_floor_db, nodata=nodata, fill=0.0)
        db = _to_db(valid, kind, noise_floor_db)
        lo, hi = np.percentile(db, [low_pct, high_pct])
        # 1e-4 dB is far finer than any codec's error; short decimals keep the footer small (every
        # file carries them: 17-digit floats were ~15% of a 512^2 image's container at 0.1 bpp)
        lo, hi = round(float(lo), 4), round(float(hi), 4)
        if not hi > lo + 1e-6:  # constant image
            lo, hi = lo - 0.5, hi + 0.5
        r = cls(kind=kind, lo_db=lo, hi_db=hi, noise_floor_db=noise_floor_db, nodata=nodata)
        v = np.clip((db - lo) / (hi - lo), 0.0, 1.0)
        r.fill = round(float(np.median(v)), 4)
        return r

    # -- mapping -------------------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stored values -> (v in [0, 1] as float32, invalid mask)."""
        x = check_array(x)
        bad = invalid_mask(x, self.kind, self.nodata)
        xv = np.where(bad, 1.0, np.asarray(x, dtype=np.float64)) if self.kind in LINEAR_KINDS else np.where(bad, 0.0, x)
        db = _to_db(xv, self.kind, self.noise_floor_db)
        v = (np.clip(db, self.lo_db, self.hi_db) - self.lo_db) / (self.hi_db - self.lo_db)
        v = np.where(bad, self.fill, v)
        return v.astype(np.float32), bad

    def forward_unclipped(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stored values -> (t = (dB - lo) / (hi - lo) *without* the clip, float64; invalid mask).
        What the pixel layer (:mod:`sarcodec.layer`) codes against: values beyond the clip range
        (bright targets) keep their distance from it."""
        x = check_array(x)
        bad = invalid_mask(x, self.kind, self.nodata)
        xv = np.where(bad, 1.0, np.asarray(x, dtype=np.float64)) if self.kind in LINEAR_KINDS else np.where(bad, 0.0, x)
        db = _to_db(xv, self.kind, self.noise_floor_db)
        return np.where(bad, self.fill, (db - self.lo_db) / (self.hi_db - self.lo_db)), bad

    def to_db(self, v: np.ndarray, clip: bool = True) -> np.ndarray:
        """[0, 1] -> dB (float64). ``clip=False`` lets values beyond [0, 1] (restored by a pixel
        layer) map beyond [lo, hi]."""
        v = np.asarray(v, dtype=np.float64)
        return self.lo_db + (np.clip(v, 0.0, 1.0) if clip else v) * (self.hi_db - self.lo_db)

    def inverse(
        self,
        v: np.ndarray,
        mask: np.ndarray | None = None,
        *,
        kind: str | None = None,
        dtype: np.dtype | str | None = None,
        clip: bool = True,
        counts: dict[str, int] | None = None,
    ) -> np.ndarray:
        """[0, 1] -> values of ``kind`` (default: the input kind) as ``dtype`` (default float32).
        ``clip=False``: values beyond [0, 1] (a pixel layer's) map beyond the clip range.

        Invalid pixels become ``nodata`` (or NaN for float outputs without nodata, 0 for integers).
        Integer dtypes are rounded and saturated to the dtype's range; ``counts["saturated"]`` (if
        given) is increased by the number of valid pixels that saturated.
        """
        kind = check_kind(kind or self.kind)
        db = self.to_db(v, clip)
        with np.errstate(over="ignore"):
            out = db if kind == "db" else from_intensity(np.power(10.0, db / 10.0), kind)
        dtype = np.dtype(dtype or np.float32)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            out = np.rint(out)
            if counts is not None:
                over = (out < info.min) | (out > info.max)
                counts["saturated"] = counts.get("saturated", 0) + int(np.sum(over if mask is None else over & ~mask))
            out = np.clip(out, info.min, info.max)
            if mask is not None:
                same = kind == self.kind and self.nodata is not None and not _isnan(self.nodata)
                fillv = self.nodata if same else 0
                out = np.where(mask, fillv, out)
            return out.astype(dtype)
        if mask is not None:
            # the input's nodata value may be a valid number in another kind (0 DN vs 0 dB)
            fillv = self.nodata if self.nodata is not None and kind == self.kind else np.nan
            out = np.where(mask, fillv, out)
        return out.astype(dtype)


def _isnan(v: float) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _to_db(x: np.ndarray, kind: str, noise_floor_db: float | None) -> np.ndarray:
    if kind == "db":
        db = np.asarray(x, dtype=np.float64)
        return db if noise_floor_db is None else np.maximum(db, noise_floor_db)
    inten = to_intensity(x, kind)
    if noise_floor_db is not None:
        inten = np.maximum(inten, 10.0 ** (noise_floor_db / 10.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(inten)

