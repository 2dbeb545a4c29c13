"""scripts/make_mmpose_references.py loaded as a module: its case lists and helpers, which the
letterbox and mmpose-parity tests share with the script that made their references."""
from repo_script import load_script

REFS = load_script('scripts/make_mmpose_references.py')
