"""``torch.compile`` for the repository's networks, in place: parameter names, state dicts and
checkpoints stay those of the eager module (``nn.Module.compile`` rather than the
``torch.compile(module)`` wrapper, whose keys gain an ``_orig_mod.`` prefix).

A network that is not only called through ``forward`` names the submodules to compile in
``compiled_submodules`` (Sim-VAE: ``encoder`` and ``decoder``, so that ``encode``, ``decode`` and
``forward`` all run compiled while the posterior object stays plain Python). Everything else
compiles its own ``forward``.
"""

from __future__ import annotations

from torch import nn


def compile_module(module: nn.Module, **options) -> nn.Module:
    """Compile ``module`` in place (``options`` go to ``torch.compile``, e.g. ``mode="max-autotune"``)
    and return it. Outputs equal the eager ones to float rounding (tests/test_compile.py)."""
    names = getattr(module, "compiled_submodules", None)
    for part in [module] if names is None else [module.get_submodule(n) for n in names]:
        part.compile(**options)
    return module
