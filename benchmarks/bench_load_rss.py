"""Peak RSS of ``load_model`` and of ``load_model`` + one forward, each in a fresh child process.

Saves a seeded ``--preset`` model directory, then for each stage starts a child that imports
voxelfm, loads the model and (for ``forward``) runs one fp32 forward over a ``--grid`` patch grid,
and reports the child's peak RSS (``VmHWM``) beside the RSS after imports and the size of the
weights. With ``--original-repo PATH`` (a checkout of github rmaguado/VoxelFM, imported at run time,
nothing of it copied here; its dependency einops must be importable) the same weights are also saved
as the original's checkpoint layout (``{"teacher": {"backbone.<name>": tensor}}``, ``torch.save``) and
loaded by the original's own ``build_model`` (``dinov2/inference/model.py``), then run once at ``--grid`` in
its own fresh child, so both peaks are measured the same way. Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_load_rss.py --preset vit-base --grid 8 8 8
    PYTHONPATH=/tmp/deps nice -n 10 .venv/bin/python benchmarks/bench_load_rss.py --original-repo /tmp/VoxelFM
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

# Both children: this process's peak RSS (VmHWM; ru_maxrss would carry the parent's peak across exec).
_HWM = r"""
def hwm():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) / 2**20
"""

# Both children, once ``model``, its patch size ``p``, ``load_s`` and ``after_imports`` are set: one fp32
# forward over the ``--grid`` patch grid (unless "load"), then the measurements as one JSON line.
_MEASURE = r"""
out = {"after_imports_gib": after_imports, "load_s": load_s,
       "weights_gib": sum(p_.numel() * p_.element_size() for p_ in model.parameters()) / 2**30}
if sys.argv[2] != "load":
    d, h, w = json.loads(sys.argv[2])
    x = torch.randn(1, d * p, h * p, w * p, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    with torch.inference_mode():
        model(x)
    out["forward_s"] = time.perf_counter() - t0
out["peak_rss_gib"] = hwm()
print(json.dumps(out))
"""

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
from voxelfm.models import load_model
""" + _HWM + r"""
after_imports = hwm()
t0 = time.perf_counter()
model = load_model(sys.argv[1])
load_s = time.perf_counter() - t0
p = model.config.patch_size
""" + _MEASURE

# The original's inference loader (torch.load of the checkpoint, then load_state_dict), one forward.
ORIGINAL_CHILD = r"""
import json, sys, time, types, torch
torch.set_num_threads(int(sys.argv[3]))
sys.path.insert(0, sys.argv[4])
import importlib.util  # the module file alone: the package's __init__ pulls in omegaconf and more
spec = importlib.util.spec_from_file_location("original_inference_model", sys.argv[4] + "/dinov2/inference/model.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
build_model = module.build_model
""" + _HWM + r"""
arch = json.loads(sys.argv[5])
student = types.SimpleNamespace(**arch)
after_imports = hwm()
t0 = time.perf_counter()
model = build_model(sys.argv[1], types.SimpleNamespace(student=student), "cpu")
load_s = time.perf_counter() - t0
p = arch["patch_size"]
""" + _MEASURE


def _original_checkpoint(model, folder: Path) -> tuple[Path, dict]:
    """The model's weights in the original's checkpoint layout, and its ``student`` config fields."""
    import torch

    c = model.config
    path = folder / "original_checkpoint.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in model.state_dict().items()}}, path)
    arch = {"embed_dim": c.embed_dim, "depth": c.depth, "num_heads": c.num_heads, "mlp_ratio": c.mlp_ratio,
            "patch_size": c.patch_size, "layerscale": c.layerscale, "rope_base": c.rope_base,
            "rope_rescale_coords": None, "ffn_layer": c.ffn_layer, "qkv_bias": c.qkv_bias,
            "proj_bias": c.proj_bias, "ffn_bias": c.ffn_bias, "num_register_tokens": c.num_register_tokens}
    return path, arch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vit-base")
    parser.add_argument("--grid", type=int, nargs=3, default=[8, 8, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--original-repo", type=Path, default=None,
                        help="also measure the original VoxelFM code (a checkout of github rmaguado/VoxelFM)")
    args = parser.parse_args()

    from voxelfm.models import build_model, save_model
    from voxelfm.preprocess import PreprocessSpec

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        model = build_model(args.preset, seed=0)
        save_model(model, folder, spec=PreprocessSpec(patch_size=model.config.patch_size))
        runs = [(stage, [CHILD, str(folder), arg, str(args.threads)])
                for stage, arg in (("load", "load"), ("load+forward", json.dumps(args.grid)))]
        if args.original_repo is not None:
            checkpoint, arch = _original_checkpoint(model, Path(tmp))
            repo = str(args.original_repo.resolve())
            runs += [(f"original {stage}", [ORIGINAL_CHILD, str(checkpoint), arg, str(args.threads), repo,
                                            json.dumps(arch)])
                     for stage, arg in (("load", "load"), ("load+forward", json.dumps(args.grid)))]
        del model
        results = {}
        for stage, argv in runs:
            done = subprocess.run([sys.executable, "-c", *argv], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{stage}: child failed\n{done.stderr}")
            results[stage] = json.loads(done.stdout.strip().splitlines()[-1])
            print(stage, json.dumps(results[stage]), flush=True)
    print(json.dumps({"preset": args.preset, "grid": args.grid, **results}, indent=1))


if __name__ == "__main__":
    main()
