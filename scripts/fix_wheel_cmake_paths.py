"""Rewrite the build-machine Python paths hard-coded in the ROS 2 wheels' CMake files.

The PyPI ROS 2 wheels export CMake targets whose include paths point at
/opt/python/cp311-cp311/... (their build machine); CMake rejects targets with missing include
directories. Usage: python fix_wheel_cmake_paths.py VENV. Idempotent.
"""
import pathlib
import sys
import sysconfig

import numpy

BUILD_PY_INCLUDE = '/opt/python/cp311-cp311/include/python3.11'
BUILD_NP_INCLUDE = '/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include'


def main(venv):
    share = pathlib.Path(venv) / 'share'
    py_inc = sysconfig.get_paths()['include']
    np_inc = numpy.get_include()
    changed = 0
    for path in share.rglob('*.cmake'):
        text = path.read_text(errors='surrogateescape')
        if '/opt/python/cp311-cp311' not in text:
            continue
        # numpy's path first: it contains the Python prefix
        text = text.replace(BUILD_NP_INCLUDE, np_inc).replace(BUILD_PY_INCLUDE, py_inc)
        path.write_text(text, errors='surrogateescape')
        changed += 1
    print(f'[setup] rewrote build-machine Python paths in {changed} CMake files')


if __name__ == '__main__':
    main(sys.argv[1])
