"""Backbones beside VoxelFM's ViT: the paper's four comparators, one interface, one registry.

* Interface: see :mod:`voxelfm.models.backbones.base` (``prepare``, ``prepare_input``,
  ``forward_features``, ``patch_geometry``, ``check_spec``, ``describe``). The VoxelFM
  :class:`~voxelfm.models.VisionTransformer3D` implements it too.
* Networks (pure torch): :class:`M3DViT` (``m3d-clip``), :class:`CTCLIPViT` (``ct-clip``),
  :class:`MerlinI3ResNet` (``merlin``), :class:`RadFMViT` (``radfm``).
* Preprocessing: :class:`NativeSpec` + :mod:`~voxelfm.models.backbones.recipes`;
  :func:`spec_from_dict` / :func:`load_spec` read either spec kind; :func:`prepare_volume`.
* :func:`backbone_class`, :func:`backbone_names`, :func:`build_backbone`, :func:`detect_source`.
* :func:`reduced_config`: named reduced configurations (``cpu``, ``test``) of the comparators.
"""

from voxelfm.models.backbones.ctclip import CTCLIPConfig, CTCLIPViT
from voxelfm.models.backbones.m3d import M3DConfig, M3DViT
from voxelfm.models.backbones.merlin import MerlinConfig, MerlinI3ResNet
from voxelfm.models.backbones.radfm import RadFMConfig, RadFMViT
from voxelfm.models.backbones.reduced import REDUCED_PRESETS, reduced_config, reduced_names
from voxelfm.models.backbones.registry import (
    LICENCES,
    SOURCE_ALIASES,
    SOURCES,
    backbone_class,
    backbone_names,
    build_backbone,
    detect_source,
    native_converter,
)
from voxelfm.models.backbones.spec import NativeSpec, load_spec, spec_from_dict


def prepare_volume(volume, spec):  # type: ignore[no-untyped-def]
    """Preprocess ``volume`` with either spec kind (a dict is read with :func:`spec_from_dict`)."""
    from voxelfm.models.backbones.recipes import run_recipe
    from voxelfm.preprocess.pipeline import preprocess

    if isinstance(spec, dict):
        spec = spec_from_dict(spec)
    return run_recipe(volume, spec) if isinstance(spec, NativeSpec) else preprocess(volume, spec)


__all__ = [
    "LICENCES",
    "REDUCED_PRESETS",
    "SOURCES",
    "SOURCE_ALIASES",
    "CTCLIPConfig",
    "CTCLIPViT",
    "M3DConfig",
    "M3DViT",
    "MerlinConfig",
    "MerlinI3ResNet",
    "NativeSpec",
    "RadFMConfig",
    "RadFMViT",
    "backbone_class",
    "backbone_names",
    "build_backbone",
    "detect_source",
    "load_spec",
    "native_converter",
    "prepare_volume",
    "reduced_config",
    "reduced_names",
    "spec_from_dict",
]
