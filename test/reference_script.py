"""scripts/make_mmpose_references.py loaded as a module: its case lists and helpers, which the
letterbox and mmpose-parity tests share with the script that made their references."""
import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location(
        'make_mmpose_references', REPO / 'scripts' / 'make_mmpose_references.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFS = _load()
