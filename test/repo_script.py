"""A script of this repository (scripts/, benchmarks/, launch/: not package modules) loaded as
a module, for the tests that call its functions."""
import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_script(relative):
    """The module of ``REPO / relative``, executed afresh (named after the file)."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.name[:-3].replace('.', '_'), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
