# Writes notebooks/*.ipynb (clean, no outputs) from the cells below: edit here, run from the repository root.
# .venv/bin/python scripts/make_notebooks.py
import nbformat as nbf
from nbformat.v4 import new_notebook, new_markdown_cell as md, new_code_cell as code

SETUP = '''import os
from pathlib import Path

import sarcodec
from sarcodec.data.scenes import default_data_dir
from sarcodec.evaluation.benchmark import evaluate_images
from sarcodec.evaluation.report import text_table
from sarcodec.training import load_config, run_config, validation_images

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()  # the repository
SMOKE = os.environ.get("SARCODEC_NOTEBOOK_SMOKE") == "1"  # CI runs every notebook with tiny settings
OUT = Path(os.environ.get("SARCODEC_NOTEBOOK_OUT", ROOT))  # where RUN_DIR goes (CI: a temporary folder)
TINY = ["steps=2", "val_every=2", "batch_size=2", "model.base_channels=8", "model.latent_channels=8",
        "data.val_patches=2", "tensorboard=false"]
print("sarcodec", sarcodec.__version__, "| data:", default_data_dir() or "none (synthetic SAR)")'''

METRICS = [("bpp", ".3f"), ("psnr", ".2f"), ("ms_ssim", ".4f"), ("enl_ratio", ".3f"), ("epi", ".3f"),
           ("j2k_psnr", ".2f"), ("dpsnr", "+.2f")]


def train_notebook(arch, title, why, config_notes):
    cells = [
        md(f"# {title}\n\n{why}\n\nA thin client of the library: the config comes from `configs/{arch}.yaml` "
           "(validated by `load_config`), training runs through the one trainer (`run_config`: warmup, AdamW, "
           "clipping, non-finite guard, checkpoints, TensorBoard in `<run>/tb`), and the metrics are "
           "`sarcodec.evaluation`'s, on the held-out validation location with real bytes. "
           "The same run from a shell: `sarcodec train --config configs/" + arch + ".yaml --quick`."),
        md("## Configuration\n\n`QUICK_SEARCH = True` is the prototype's quick-search mode (a short run on small "
           "patches, minutes on a CPU); `False` runs the config as written. " + config_notes),
        code(f'''QUICK_SEARCH = True
DATA = "auto"            # "auto": ../shared/sar when present, else synthetic SAR; or "shared" / "synthetic"
CONFIG = "configs/{arch}.yaml"
OVERRIDES = []           # key=value, e.g. ["lmbda=0.02", "model.base_channels=32"]
RUN_DIR = "runs/notebook-{arch}"
DEVICE = "cpu"           # or "cuda"'''),
        code(SETUP),
        code('''source = "synthetic" if SMOKE else (DATA if DATA != "auto" else ("shared" if default_data_dir() else "synthetic"))
overrides = list(OVERRIDES) + [f"data.source={source}"] + (TINY if SMOKE else [])
cfg, data = load_config(ROOT / CONFIG, overrides, quick=QUICK_SEARCH)
print(f"{cfg.arch}: {cfg.model}, lambda {cfg.lmbda}, {cfg.steps} steps of {cfg.batch_size} x {cfg.patch_size}^2, "
      f"lr {cfg.lr} (warmup {cfg.warmup_steps}), weight decay {cfg.weight_decay}, clip {cfg.grad_clip}, data {source}")'''),
        md("## Training"),
        code('''run = OUT / RUN_DIR
summary = run_config(cfg, data, run, device=DEVICE, progress=True)
print(f"{summary['steps']} steps in {summary['seconds']} s ({summary['patches_per_s']} patches/s), "
      f"non-finite batches skipped: {summary['nonfinite']}")
print(text_table([{"name": f"step {h['step']}", **h} for h in summary["history"]],
                 [("loss", ".4f"), ("bpp", ".3f"), ("psnr", ".2f")]))'''),
        md("## SAR metrics on the validation images\n\nbpp from the bytes of a real encode; PSNR, MS-SSIM and "
           "EPI in the benchmark domain (dB clipped to the image's 0.1/99.9 percentiles, scaled to [0, 1]); "
           "ENL ratio in linear intensity (1 = speckle kept); `dpsnr` = PSNR gain over JPEG 2000 at the same bpp."),
        code(f'''model = sarcodec.load_model(run / "best.pt")
rows = evaluate_images(model, validation_images(data, size=128 if SMOKE else 256))
print(text_table(rows, {METRICS!r}, key="image"))'''),
    ]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


nbf.write(train_notebook(
    "residual", "Train the Residual codec (variant B)",
    "Pre-activation residual blocks in the analysis and synthesis transforms (the prototype's variant B), "
    "a factorized entropy bottleneck on quantised latents.",
    "The prototype trained this model at lr 5e-5; the config keeps that."), "notebooks/train_residual.ipynb")
nbf.write(train_notebook(
    "attention", "Train the Attention codec (variant C)",
    "The residual transforms plus CBAM channel and spatial attention (the prototype's variant C, base 48 channels).",
    "The prototype's base of 48 channels and lr 5e-5 are in the config."), "notebooks/train_attention.ipynb")

cells = [
    md("# Compare the architectures\n\nEvery architecture of the registry trained with the same budget (steps, "
       "batch, patch size, lr, lambda) through the one trainer, then measured on the held-out validation "
       "images with real bytes. The study at a larger matched budget, on `test/`, is "
       "`scripts/architecture_study.sh` (report in `docs/architecture-study/`); its table is shown at the end."),
    md("## Configuration"),
    code('''QUICK_SEARCH = True
DATA = "auto"             # "auto" | "shared" | "synthetic"
ARCHS = ["baseline", "resnet-lite", "residual", "attention", "hyperprior"]
BUDGET = ["lr=2.0e-4", "lmbda=0.01"]   # the same for every architecture (QUICK_SEARCH sets steps and patches)
RUN_DIR = "runs/notebook-compare"
DEVICE = "cpu"'''),
    code(SETUP),
    md("## Training, one architecture after another"),
    code('''from sarcodec.evaluation.metrics import macs_per_pixel

source = "synthetic" if SMOKE else (DATA if DATA != "auto" else ("shared" if default_data_dir() else "synthetic"))
results = []
for arch in ARCHS:
    cfg, data = load_config(ROOT / "configs" / f"{arch}.yaml", BUDGET + [f"data.source={source}"] + (TINY if SMOKE else []),
                            quick=QUICK_SEARCH)
    s = run_config(cfg, data, OUT / RUN_DIR / arch, device=DEVICE)
    model = sarcodec.load_model(OUT / RUN_DIR / arch / "best.pt")
    rows = evaluate_images(model, validation_images(data, size=128 if SMOKE else 256))
    mean = lambda k: sum(r[k] for r in rows) / len(rows)
    gains = [r["dpsnr"] for r in rows if r["dpsnr"] is not None]
    results.append({"name": arch, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                    "kMAC_px": macs_per_pixel(model) / 1e3, "patches_s": s["patches_per_s"],
                    **{k: mean(k) for k in ("bpp", "psnr", "ms_ssim", "enl_ratio", "epi")},
                    "dpsnr_vs_j2k": sum(gains) / len(gains) if gains else None})
    print(f"{arch}: {s['steps']} steps, {s['seconds']} s")'''),
    md("## Results\n\nMeans over the validation images; `Δ` columns are signed differences against the baseline "
       "(plain strided convolutions). `dpsnr_vs_j2k` is the PSNR gain over JPEG 2000 at each model's own bpp."),
    code('''print(text_table(results, [("params_M", ".2f"), ("kMAC_px", ".1f"), ("patches_s", ".1f"), ("bpp", ".3f"),
                           ("psnr", ".2f"), ("ms_ssim", ".4f"), ("enl_ratio", ".3f"), ("epi", ".3f"),
                           ("dpsnr_vs_j2k", "+.2f")],
                 reference="baseline", deltas=("bpp", "psnr", "dpsnr_vs_j2k")))'''),
    md("## The committed study (matched budget, `test/`)"),
    code('''import json

study = ROOT / "docs" / "architecture-study" / "results.json"
if study.is_file():
    res = json.loads(study.read_text())
    rows = [{"name": c, "bd_rate_pct": s["bd_rate"], "bd_psnr_db": s["bd_psnr"]} for c, s in res["summary"].items()]
    print(text_table(rows, [("bd_rate_pct", "+.1f"), ("bd_psnr_db", "+.2f")]))
else:
    print("no study yet: scripts/architecture_study.sh writes it")'''),
]
nb = new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "notebooks/compare_architectures.ipynb")
