"""Write the conformance vectors of the .sarc format (``tests/vectors/``): small files covering every
tile and layer form the encoder writes, each with the SHA-256 of its entropy-decoded integers and of
its decoded pixels (``vectors.json``) and, for the lossy ones, the decoded pixels themselves
(``pixels.npz``, the reference a decoder on other hardware is compared with).

    python scripts/make_vectors.py [--out tests/vectors]

Run it only when the format changes on purpose (a new format version): the vectors exist so that
any other change that alters decoding fails ``tests/test_conformance.py``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

import sarcodec  # noqa: E402
from sarcodec.container import ContainerReader, format_name  # noqa: E402
from sarcodec.data.synthetic import synthetic_sar  # noqa: E402


def integers_digest(data: bytes) -> tuple[str, list[int]]:
    """SHA-256 over every tile (index order) of its entropy-decoded latents (float32: integer
    symbols times the latent step, exact on every machine) and its pixel layer's decoded values
    (int64 integers, or the float64 residual a wavelet packet layer synthesises from integers),
    and the layer flags seen (byte 2 of each layer blob; inside flag 5, the wrapped form too)."""
    h = hashlib.sha256()
    flags: set[int] = set()
    reader = ContainerReader(data)
    hdr = reader.header
    lossless = bool(hdr.metadata.get("lossless"))
    model = None if lossless else sarcodec.load_model(hdr.model["id"])
    step = int(hdr.metadata.get("latent_step", 64))
    for e in hdr.tiles:
        if model is not None:
            y = model.decode_latent(reader.tile_bytes(e), e.height, e.width, step)
            h.update(np.ascontiguousarray(y.numpy(), "<f4").tobytes())
        if e.layer_length:
            blob = reader._read(e.layer_offset, e.layer_length)
            flags.add(blob[2])
            if blob[2] == 5:
                from sarcodec.layer.coder import _HEAD
                from sarcodec.layer.restoration import RestorationFilter

                flags.add(blob[RestorationFilter.unpack(blob, _HEAD.size)[1] + 2])
            lay = reader.tile_layer(e)
            if lay.q is not None:
                h.update(np.ascontiguousarray(lay.q, "<i8").tobytes())
            if lay.residual is not None:
                h.update(np.ascontiguousarray(lay.residual, "<f8").tobytes())
    return h.hexdigest(), sorted(flags)


@contextmanager
def packet_and_filter():
    """Make the encoder write its MSE layers in the wavelet packet form inside a restoration
    filter (flags 5 and 8): it picks them per tile where they cost less, which on a small
    synthetic image they rarely do, and a vector must carry every form a decoder may meet."""
    import sarcodec.layer as layer
    from sarcodec.layer.restoration import fit_filter

    def no_pixel_form(r, step):
        return b"", layer.LayerData(None, step, 0.0)

    def always_filter(blob, lay, t, base, valid, lo_db, hi_db, cost):
        lay.filter = fit_filter(lay.unfiltered(base, lo_db, hi_db), t, valid)
        return layer._HEAD.pack(layer._MAGIC, 5, lay.step, 0.0, 0) + lay.filter.pack() + blob, lay

    saved = layer.dq.encode_dq, layer.with_filter
    layer.dq.encode_dq, layer.with_filter = no_pixel_form, always_filter
    try:
        yield
    finally:
        layer.dq.encode_dq, layer.with_filter = saved


def pixels_digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def scene(shape=(96, 80), seed=3) -> np.ndarray:
    """GRD-like intensity with bright point targets and a NaN (invalid) corner."""
    x = synthetic_sar(shape, seed=seed).astype(np.float32)
    rng = np.random.default_rng(seed)
    for r, c in rng.integers(4, min(shape) - 4, (6, 2)):
        x[r, c] *= 400.0
    x[:9, :13] = np.nan
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "vectors")
    ap.add_argument("--pixels-only", action="store_true",
                    help="keep the .sarc files and their integers; decode them again for the pixel references "
                         "(after a change of how the synthesis rounds, not of the format)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.pixels_only:
        table = json.loads((a.out / "vectors.json").read_text())
        pixels = {}
        for name, v in table.items():
            data = (a.out / v["file"]).read_bytes()
            out = sarcodec.decode(data)
            v["pixels_sha256"] = pixels_digest(out)
            if not ContainerReader(data).header.metadata.get("lossless"):
                pixels[name] = out
        (a.out / "vectors.json").write_text(json.dumps(table, indent=1) + "\n")
        np.savez_compressed(a.out / "pixels.npz", **pixels)
        return
    x = scene()
    dn = np.stack([np.sqrt(synthetic_sar((96, 80), seed=s) * 3e5).round().clip(0, 65535) for s in (7, 8)]).astype("uint16")
    dn[1, 40:50, 30:44] = 0  # nodata 0
    cases = [
        ("default", "the default model and settings: latents, outliers and bias shift, nodata mask",
         x, dict(model="default", tile_size=64)),
        ("quality-2.5", "a continuous quality: latent step 91/64 on default-q3", x,
         dict(model="default", quality=2.5, tile_size=64)),
        ("max-error", "a bound pixel layer: every pixel within 1 dB", x, dict(model="default", max_error=1.0, tile_size=64)),
        ("mse-layer", "MSE layers in the pixel domain (dependent quantisation)", x,
         dict(model="default-q1", max_error=0.6, bound=False, tile_size=64)),
        ("mse-packet-filter", "MSE layers in the wavelet packet form inside a restoration filter", x,
         dict(model="default-q1", max_error=0.6, bound=False, tile_size=64)),
        ("fast", "the fast decoder (lite synthesis, a derived checkpoint)", x, dict(model="fast", tile_size=64)),
        ("lossless-uint16", "lossless, two uint16 bands with nodata 0", dn, dict(model="default", lossless=True,
                                                                               kind="dn", nodata=0, tile_size=64)),
        ("two-band-dn", "two uint16 DN bands, nodata 0, lossy", dn, dict(model="default", kind="dn", nodata=0,
                                                                         tile_size=64)),
    ]
    table = {}
    pixels = {}
    for name, what, img, kw in cases:
        model = kw.pop("model")
        with packet_and_filter() if name == "mse-packet-filter" else nullcontext():
            data = sarcodec.encode(img, model, **kw)
        (a.out / f"{name}.sarc").write_bytes(data)
        out = sarcodec.decode(data)
        digest, flags = integers_digest(data)
        hdr = ContainerReader(data).header
        table[name] = {"file": f"{name}.sarc", "what": what, "format": format_name(hdr.version),
                       "model": hdr.model["id"], "shape": list(out.shape), "dtype": str(out.dtype),
                       "bytes": len(data), "layer_flags": flags, "integers_sha256": digest,
                       "pixels_sha256": pixels_digest(out)}
        if not hdr.metadata.get("lossless"):
            pixels[name] = out
        print(f"{name:16s} {len(data):6d} bytes  {hdr.model['id']:11s} layer flags {flags}", flush=True)
    (a.out / "vectors.json").write_text(json.dumps(table, indent=1) + "\n")
    np.savez_compressed(a.out / "pixels.npz", **pixels)


if __name__ == "__main__":
    main()
