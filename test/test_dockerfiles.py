"""scripts/docker/Dockerfile.x86 and scripts/docker/Dockerfile.jetson, checked without Docker.

No image is built here (no registry, daemon or GPU on these machines). The Dockerfiles are read
line by line and held to what the repository says: the documented base image per platform, every
ROS dependency of the two package.xml files installed as ``ros-<distro>-*`` for the distro of
that base (Jazzy on Ubuntu 24.04, Humble on JetPack 6's Ubuntu 22.04), COPY sources present and
not dropped by ``.dockerignore``, the default command ``ros2 launch rtmo_ros pose.launch.py``
behind an entrypoint that sources the distro and the workspace, cuda-python below 13 (CUDA 12),
numpy below 2 (the ROS message extensions are built against numpy 1.x), and the engine cache in
a volume.
"""
import json
import os
import pathlib
import re
import shlex
import xml.etree.ElementTree as ET

from packaging.requirements import Requirement
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# platform -> Dockerfile, documented base (NGC image and tag form), ROS 2 distro of its Ubuntu
IMAGES = {
    'x86': ('scripts/docker/Dockerfile.x86', r'nvcr\.io/nvidia/tensorrt:\d\d\.\d\d-py3', 'jazzy'),
    'jetson': ('scripts/docker/Dockerfile.jetson', r'nvcr\.io/nvidia/l4t-jetpack:r36\.\d+\.\d+',
               'humble'),
}
PACKAGE_XMLS = ('package.xml', 'rtmo_msgs/package.xml')
RUNTIME_DEPENDS = ('depend', 'build_depend', 'buildtool_depend', 'build_export_depend',
                   'exec_depend')
# rosdep keys met by a pip package instead of the apt one (see the Dockerfiles' comments)
PIP_INSTEAD = {'python3-opencv': 'opencv-python-headless'}
LAUNCH = ['ros2', 'launch', 'rtmo_ros', 'pose.launch.py']
# files a checkout may hold that are neither sources nor needed in an image
CACHE_PARTS = ('__pycache__', '.pytest_cache', '.ruff_cache', '.hypothesis')
PIP_OPTIONS_WITH_VALUE = ('--index-url', '--extra-index-url', '-i', '-c', '-r', '--constraint',
                          '--requirement', '-f', '--find-links')
SHELL_SEPARATORS = ('{', '}', 'then', 'else', 'fi', 'do', 'done')


def instructions(path):
    """[(KEYWORD, arguments)] of a Dockerfile: continuations joined, comment lines dropped."""
    out, pending = [], ''
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith('#'):
            continue  # Docker drops comment and empty lines, inside continuations too
        if text.endswith('\\'):
            pending += text[:-1] + ' '
            continue
        keyword, _, rest = (pending + text).partition(' ')
        out.append((keyword.upper(), rest.strip()))
        pending = ''
    assert not pending, f'{path}: the last instruction ends in a continuation'
    return out


def arg_defaults(steps):
    """{name: default} of every ARG with a default."""
    found = {}
    for keyword, rest in steps:
        if keyword == 'ARG' and '=' in rest:
            name, _, value = rest.partition('=')
            found[name] = value.strip('"')
    return found


def expand(text, variables):
    """Replace ${NAME} / $NAME by the ARG default, leaving unknown names as they are."""
    def value(match):
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))
    return re.sub(r'\$\{(\w+)\}|\$(\w+)', value, text)


def commands(steps, program):
    """Argument lists of every ``<program> install`` in the RUN steps, ARGs expanded."""
    variables = arg_defaults(steps)
    found = []
    for keyword, rest in steps:
        if keyword != 'RUN':
            continue
        lexer = shlex.shlex(expand(rest, variables), posix=True, punctuation_chars=True)
        command = []
        for word in list(lexer) + [';']:
            if word in SHELL_SEPARATORS or set(word) <= set('();<>|&'):
                if command[:2] == [program, 'install']:
                    found.append(command[2:])
                command = []
            elif command or word == program:
                command.append(word)
    return found


def apt_packages(steps):
    return {word for args in commands(steps, 'apt-get') for word in args
            if not word.startswith('-')}


def pip_requirements(steps):
    """[[Requirement, ...] per ``pip install``] (options and their values left out)."""
    found = []
    for args in commands(steps, 'pip'):
        reqs, skip = [], False
        for word in args:
            if skip:
                skip = False
            elif word in PIP_OPTIONS_WITH_VALUE:
                skip = True
            elif not word.startswith('-'):
                reqs.append(Requirement(word))
        found.append(reqs)
    return found


def env(steps):
    """{name: value} of the ENV instructions (KEY=VALUE form)."""
    found = {}
    for keyword, rest in steps:
        if keyword == 'ENV':
            found.update(word.split('=', 1) for word in shlex.split(rest))
    return found


def dependency_keys():
    """Rosdep keys the two package.xml files need to build and run (not tests), own ones out."""
    keys, own = set(), set()
    for name in PACKAGE_XMLS:
        root = ET.parse(ROOT / name).getroot()
        own.add(root.findtext('name'))
        keys.update(element.text.strip() for tag in RUNTIME_DEPENDS for element in root.iter(tag))
    return keys - own


def ignore_rules():
    """[(negated, regex)] of .dockerignore (Go filepath.Match patterns plus Docker's ``**``)."""
    rules = []
    for line in (ROOT / '.dockerignore').read_text().splitlines():
        text = line.strip()
        if not text or text.startswith('#'):
            continue
        negated = text.startswith('!')
        pattern = text.lstrip('!').strip().strip('/')
        regex = re.escape(pattern).replace(r'\*\*/', '(?:.*/)?').replace(r'\*\*', '.*')
        regex = regex.replace(r'\*', '[^/]*').replace(r'\?', '[^/]')
        rules.append((negated, re.compile(regex)))
    return rules


def ignored(relative, rules):
    """Whether Docker leaves ``relative`` (posix path) out of the build context."""
    parts = relative.split('/')
    prefixes = ['/'.join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negated, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negated
    return result


def source_files(path):
    """Files under ``path`` (or ``path`` itself) a checkout holds as sources."""
    if path.is_file():
        return [path]
    return [p for p in path.rglob('*') if p.is_file()
            and not any(part in CACHE_PARTS or part.endswith('.egg-info') for part in p.parts)
            and p.suffix != '.pyc']


@pytest.fixture(params=sorted(IMAGES), scope='module')
def image(request):
    """(platform, instructions, documented base regex, ROS 2 distro) of one Dockerfile."""
    file, base, distro = IMAGES[request.param]
    return request.param, instructions(ROOT / file), base, distro


def test_from_names_the_documented_base(image):
    platform, steps, base, _ = image
    froms = [expand(rest, arg_defaults(steps)).split()[0]
             for keyword, rest in steps if keyword == 'FROM']
    assert len(froms) == 1, f'{platform}: one stage expected, got FROM {froms}'
    assert re.fullmatch(base, froms[0]), f'{platform}: FROM {froms[0]} is not {base}'


def test_ros_distro_matches_the_base(image):
    platform, steps, _, distro = image
    assert env(steps).get('ROS_DISTRO') == distro
    other = {p for p in apt_packages(steps)
             if p.startswith('ros-') and not p.startswith(f'ros-{distro}-')}
    assert not other, f'{platform}: packages of another distro: {sorted(other)}'
    text = ' '.join(rest for keyword, rest in steps if keyword == 'RUN')
    assert set(re.findall(r'/opt/ros/(\w+)/', text)) == {distro}


def test_every_ros_dependency_is_installed(image):
    platform, steps, _, distro = image
    installed = apt_packages(steps)
    keys = dependency_keys()
    assert {'rclpy', 'vision_msgs', 'launch_ros', 'rosidl_default_generators'} <= keys
    missing = sorted(f'ros-{distro}-{key.replace("_", "-")}' for key in keys
                     if not key.startswith('python3-')
                     and f'ros-{distro}-{key.replace("_", "-")}' not in installed)
    assert not missing, f'{platform}: package.xml dependencies not apt-installed: {missing}'
    assert 'python3-colcon-common-extensions' in installed
    assert f'ros-{distro}-ros-base' in installed


def test_every_python_dependency_is_installed(image):
    platform, steps, _, _ = image
    installed = apt_packages(steps)
    pip_names = {req.name for reqs in pip_requirements(steps) for req in reqs}
    for key in sorted(k for k in dependency_keys() if k.startswith('python3-')):
        assert key in installed or PIP_INSTEAD.get(key) in pip_names, \
            f'{platform}: {key} neither apt-installed nor replaced by pip'


def test_copy_sources_exist_and_reach_the_build_context(image):
    platform, steps, _, _ = image
    rules = ignore_rules()
    copies = [shlex.split(rest) for keyword, rest in steps if keyword == 'COPY']
    assert copies, f'{platform}: nothing copied'
    sources = [word for args in copies for word in args[:-1] if not word.startswith('--')]
    for source in sources:
        path = ROOT / source
        assert path.exists(), f'{platform}: COPY {source}: not in the repository'
        files = source_files(path)
        assert files, f'{platform}: COPY {source}: no files'
        dropped = [str(p.relative_to(ROOT)) for p in files
                   if ignored(p.relative_to(ROOT).as_posix(), rules)]
        assert not dropped, f'{platform}: COPY {source}: excluded by .dockerignore: {dropped}'
    # what setup.py installs (launch files, parameters, the bundled model) and rtmo_msgs
    for needed in ('package.xml', 'setup.py', 'setup.cfg', 'resource', 'launch', 'config',
                   'rtmo_ros', 'rtmo_train', 'rtmo_msgs'):
        assert needed in sources, f'{platform}: {needed} is not copied'


def test_colcon_builds_both_packages_from_the_distro(image):
    platform, steps, _, distro = image
    destinations = [shlex.split(rest)[-1] for keyword, rest in steps if keyword == 'COPY']
    assert 'src/rtmo_msgs' in destinations and 'src/rtmo_ros/' in destinations
    builds = [rest for keyword, rest in steps if keyword == 'RUN' and 'colcon build' in rest]
    assert len(builds) == 1, f'{platform}: one colcon build expected'
    assert builds[0].index(f'/opt/ros/{distro}/setup.bash') < builds[0].index('colcon build')


def test_default_command_launches_the_node(image):
    platform, steps, _, distro = image
    last = {keyword: rest for keyword, rest in steps}
    assert json.loads(last['CMD']) == LAUNCH
    script = json.loads(last['ENTRYPOINT'])[0]
    writers = [rest for keyword, rest in steps if keyword == 'RUN' and f'> {script}' in rest]
    assert len(writers) == 1, f'{platform}: the RUN writing {script} not found'
    lines = shlex.split(writers[0].split('printf', 1)[1].split(f'> {script}')[0])[1:]
    assert lines[0] == '#!/bin/bash'
    assert f'source /opt/ros/{distro}/setup.bash' in lines
    assert 'source /opt/rtmo_ws/install/setup.bash' in lines
    assert lines[-1] == 'exec "$@"'
    assert (ROOT / 'launch' / LAUNCH[-1]).is_file()


def test_cuda_python_matches_cuda_12(image):
    platform, steps, _, _ = image
    specs = [req.specifier for reqs in pip_requirements(steps) for req in reqs
             if req.name == 'cuda-python']
    assert specs, f'{platform}: cuda-python is not installed'
    for spec in specs:
        assert spec.contains('12.6') and not spec.contains('13.0'), \
            f'{platform}: cuda-python{spec} must stay below 13 (CUDA 12)'


def test_numpy_stays_below_2(image):
    platform, steps, _, _ = image
    for reqs in pip_requirements(steps):
        numpy = [req.specifier for req in reqs if req.name == 'numpy']
        assert numpy and not numpy[0].contains('2.0'), \
            f'{platform}: pip install {[str(r) for r in reqs]} without numpy<2'


def test_onnxruntime_has_a_gpu_build(image):
    platform, steps, _, _ = image
    names = [req.name for reqs in pip_requirements(steps) for req in reqs]
    assert 'onnxruntime-gpu' in names
    if platform == 'x86':
        assert 'onnxruntime' not in names  # the CPU package would shadow the GPU one
    else:  # the Jetson build falls back to the CPU package when the Jetson index fails
        runs = [rest for keyword, rest in steps if keyword == 'RUN' and 'onnxruntime-gpu' in rest]
        assert any('--index-url' in rest and '|| {' in rest for rest in runs)


def test_engine_cache_is_a_volume(image):
    platform, steps, _, _ = image
    volumes = [v for keyword, rest in steps if keyword == 'VOLUME' for v in json.loads(rest)]
    home = env(steps).get('RTMO_HOME', '')
    assert any(os.path.commonpath([home, v]) == v for v in volumes), \
        f'{platform}: RTMO_HOME {home!r} (models, engines/) is not under a VOLUME {volumes}'


def test_dockerignore_keeps_build_outputs_and_caches_out():
    rules = ignore_rules()
    for path in ('.venv/bin/python', 'build/rtmo_msgs/Makefile', 'install/setup.bash',
                 'log/latest', 'demo_output/x.png', '.git/HEAD', 'rtmo_ros/__pycache__/a.pyc',
                 'rtmo_ros/engine/a.pyc', '.pytest_cache/v', '.ruff_cache/x', 'x.egg-info/PKG'):
        assert ignored(path, rules), path
    for path in ('rtmo_ros/models/rtmo_tiny_synthetic.onnx', 'launch/pose.launch.py',
                 'rtmo_msgs/msg/Person.msg', 'scripts/docker/Dockerfile.x86'):
        assert not ignored(path, rules), path
