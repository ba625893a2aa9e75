"""Speed of the pixel layer's two MSE forms (pixel and wavelet packet, both with dependent
quantisation on the 8-state trellis; beside them the scalar quantiser of the bound layer), of its
restoration filter (fit by the encoder, applied by the decoder), and what an MSE layer costs a
whole-file decode with the bundled ``default`` family.

    python benchmarks/layer_speed.py [--size 512] [--repeat 3] [--image PATH]

Layer timings use a spatially correlated residual (smoothed Gaussian noise, the wavelet form's
case) at max_error 0.5 dB; file timings use ``--image`` (a GeoTIFF, e.g. a validation scene) or
synthetic SAR. Medians of --repeat runs, all measured in the same run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

import sarcodec  # noqa: E402
from codec_speed import _median_time as _median  # noqa: E402
from sarcodec.api import family_members  # noqa: E402
from sarcodec.container import ContainerReader  # noqa: E402
from sarcodec.data import synthetic_sar  # noqa: E402
from sarcodec.layer import decode_layer, encode_layer  # noqa: E402
from sarcodec.layer.dq import encode_dq  # noqa: E402
from sarcodec.layer.restoration import fit_filter  # noqa: E402
from sarcodec.layer.wavelet import dyadic_tree, encode_packet_layer  # noqa: E402


def main() -> None:
    from scipy.ndimage import gaussian_filter

    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--image", type=Path, default=None)
    a = ap.parse_args()
    n = a.size
    mp = n * n / 1e6
    step = 2 * 0.5 / 30.0  # max_error 0.5 dB over a 30 dB clip range
    r = gaussian_filter(np.random.default_rng(0).normal(0, 0.05, (n, n)), 1.5) * 4
    q = np.rint(r / step).astype(np.int64)
    wav, _ = encode_packet_layer(r, step)
    print(f"{n}x{n} correlated residual, max_error 0.5 dB, median of {a.repeat}")
    print(f"{'layer form':18s} {'bytes':>8s} {'PSNR dB':>8s} {'encode MP/s':>12s} {'decode MP/s':>12s}")
    forms = (("pixel, DQ", lambda: encode_dq(r, step)[0]),
             ("packet, DQ", lambda: encode_packet_layer(r, step)[0]),
             ("dyadic tree, DQ", lambda: encode_packet_layer(r, step, dyadic_tree(2))[0]),
             ("pixel, scalar", lambda: encode_layer(q, step)))
    for name, enc in forms:
        blob = enc()
        te = _median(enc, a.repeat)
        td = _median(lambda blob=blob: decode_layer(blob, (n, n)), a.repeat)
        d = decode_layer(blob, (n, n))
        err = (d.residual if d.residual is not None else d.values()) - r
        print(f"{name:18s} {len(blob):8d} {10 * np.log10(1 / np.mean(err ** 2)):8.2f} {mp / te:12.2f} {mp / td:12.2f}")
    rec = 0.5 + decode_layer(wav, (n, n)).residual  # the packet layer's reconstruction of t = 0.5 + r
    ok = np.ones((n, n), bool)
    filt = fit_filter(rec, 0.5 + r, ok)
    te = _median(lambda: fit_filter(rec, 0.5 + r, ok), a.repeat)
    td = _median(lambda: filt.apply(rec), a.repeat)
    print(f"{'+ filter':12s} {filt.nbytes:8d} {mp / te:12.2f} {mp / td:12.2f}   (fit / apply on its reconstruction)")
    if a.image is not None:
        from sarcodec.data.scenes import read_intensity

        img = read_intensity(a.image)
    else:
        img = synthetic_sar((n, n), seed=0)
    fam = family_members("default")
    mp = img.size / 1e6
    print(f"\nwhole file, {img.shape[0]}x{img.shape[1]} ({a.image.name if a.image else 'synthetic'}), default family")
    print(f"{'file':28s} {'bpp':>6s} {'decode MP/s':>12s}")
    for label, kw in (("quality 2", {"quality": 2}), ("quality 1 + MSE layer 0.5 dB", {"quality": 1, "max_error": 0.5,
                                                                                        "bound": False})):
        data = sarcodec.encode(img, fam, **kw)
        td = _median(lambda data=data: sarcodec.decode(data, fam), a.repeat)
        r_ = ContainerReader(data)
        lays = [r_.tile_layer(e) for e in r_.header.tiles]
        nf = sum(lay is not None and lay.filter is not None for lay in lays)
        print(f"{label:28s} {8 * len(data) / img.size:6.2f} {mp / td:12.2f}"
              + (f"   (restoration filter on {nf} of {len(lays)} tiles)" if "max_error" in kw else ""))


if __name__ == "__main__":
    main()
