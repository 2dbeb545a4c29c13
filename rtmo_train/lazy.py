"""Lazy package exports: ``name -> submodule`` resolved on first access (PEP 562).

Keeps ``import rtmo_train`` (and ``rtmo_train.data``) free of torch until a torch-backed name is
used, so the torch-free parts (synthetic people, evaluation) serve the bag tools without it.
"""
import importlib


def lazy_getattr(package, exports):
    """Return a module ``__getattr__`` that imports ``package.<exports[name]>`` on demand."""
    module_globals = importlib.import_module(package).__dict__

    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f'module {package!r} has no attribute {name!r}')
        value = getattr(importlib.import_module(f'{package}.{exports[name]}'), name)
        module_globals[name] = value  # cache: later look-ups skip this function
        return value

    return __getattr__
