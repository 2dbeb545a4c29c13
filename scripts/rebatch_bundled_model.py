"""Re-export the bundled demo model with a dynamic batch axis, from weights read out of its ONNX.

    python scripts/rebatch_bundled_model.py [--source ONNX] [--output ONNX] [--no-json]
                                            [--frames 32] [--skip-ap]

It matches the graph of the exporter it was written for (before the factored DCC and the fused
stem and FPN inputs; commit 02a2bad): to rerun it, check out that commit. Run with no arguments
it replaced the bundled batch-1 graph (sha256 e817b8a3...) and updated
its json. To redo that from the batch-1 graph of the git history:
``git show REV:rtmo_ros/models/rtmo_tiny_synthetic.onnx > /tmp/b1.onnx`` and
``--source /tmp/b1.onnx --output rtmo_ros/models/rtmo_tiny_synthetic.onnx`` (the config is read
from the json next to --source, else the bundled one).

Why
---
``rtmo_ros/models/rtmo_tiny_synthetic.onnx`` was exported by ``scripts/package_demo_model.py``
with a fixed batch of 1, so one engine call could serve one camera only. The checkpoint it came
from is lost and retraining takes hours, but the graph holds every weight the network uses:
``rtmo_train.export.export_onnx`` traces ``RTMOWithNMS(model.deploy())``, so the initializers
are the deployed (BatchNorm-folded, RepVGG-fused) model's tensors.

How
---
1. Probe: a deployed RTMO-tiny of the bundled config whose every tensor (parameters and buffers)
   is filled with distinct seeded random values is exported with the source graph's batch mode;
   its initializer names, shapes, Constant nodes and node list must equal the source graph's.
   Each initializer is then traced back to the tensor that made it: ``model.<key>`` names are
   state-dict entries; the unnamed ones (``onnx::MatMul_*``, ``onnx::Add_*``, ``onnx::Mul_*``:
   constant-folded Linear weights of the encoder and the DCC) are found by exact value
   comparison as a transpose, a row or a third of the q/k/v in-projection of one entry, and
   ``onnx::Cos_*`` as the neck's sine table ``arange(10)[:, None] / dim_t`` (10 = 320 / 32).
2. Recover: the inverse of each map puts the source graph's values into a fresh deployed model.
   ``dim_t`` is solved from the table: per column the one float32 that reproduces all rows
   (the trained buffer is not the formula's ``10000 ** (i / 24)``: it differs by up to
   1.3e-5 relative, presumably rounding of the EMA update over training). Entries the graph
   does not use (training-only ``out_kpt_reg``, ``sigma_fc``, the OKS sigmas) keep their
   seeded initial values; step 4 (1) proves they change nothing.
3. Export: ``export_onnx(model, output, dynamic_batch=True)`` (``deploy()`` is idempotent on an
   already deployed model), written to a temporary file and moved into place only if step 4
   passes.
4. Verify, and print the figures:
   (1) the recovered model exported again with the source's batch mode: every initializer,
       Constant node and node equals the source graph's (max |diff| expected 0);
   (2) new graph at batch 1 vs the source graph on rendered frames (``render_sequence``,
       letterboxed by ``letterbox_image``): same person count per frame, max |diff| of
       ``dets`` and ``keypoints`` within ``TOLERANCE`` network-input pixels; and with ONNX
       Runtime's graph optimizations off, where both graphs run the same operations, the
       outputs must be bit-identical (with them on, its fusions around the dynamic Reshapes
       differ: ~1e-4 px);
   (3) new graph at batch 4 on 4 different frames: each image's rows equal its batch-1 rows;
   (4) unless --skip-ap: COCO keypoint AP of both graphs through ``PoseEstimator`` (ONNX
       Runtime) on the json's held-out set, regenerated in a temporary folder.
5. ``rtmo_tiny_synthetic.json``: the onnx bytes, sha256 and export text are updated, with a
   note naming this script and the figures. The measured AP figures stay: the outputs are the
   measured graph's to within ``TOLERANCE``.

Runnable again: on an already dynamic graph it probes and compares in dynamic mode (the
export is deterministic); if the new export is byte-identical to the source, nothing is
written, else the json gets the new bytes and sha256 and keeps its note.
"""
import argparse
import hashlib
import json
import pathlib
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
BUNDLED = REPO / 'rtmo_ros' / 'models' / 'rtmo_tiny_synthetic.onnx'
TOLERANCE = 1e-3  # network-input pixels (and score units) between old and new graph outputs
PROBE_SEED = 1234


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--source', default=str(BUNDLED),
                        help='ONNX to recover the weights from (default: the bundled model)')
    parser.add_argument('--output', default=None,
                        help='dynamic-batch ONNX to write (default: --source, replaced)')
    parser.add_argument('--no-json', action='store_true',
                        help='do not update the .json next to the output')
    parser.add_argument('--frames', type=int, default=32, help='frames compared at batch 1')
    parser.add_argument('--skip-ap', action='store_true',
                        help='do not re-measure the held-out AP of both graphs (~1 min)')
    return parser.parse_args(argv)


# ---- reading graphs ---------------------------------------------------------------------------

def read_graph(data):
    """(model proto, {initializer: array}, {Constant output: array}) of serialized ONNX."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(data)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    consts = {}
    for node in proto.graph.node:
        if node.op_type == 'Constant':
            for attr in node.attribute:
                consts[node.output[0]] = (numpy_helper.to_array(attr.t) if attr.name == 'value'
                                          else onnx.helper.get_attribute_value(attr))
    return proto, inits, consts


def batch_dim(proto):
    """The input's batch size, or None when the axis is dynamic."""
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField('dim_value') else None


def node_list(proto):
    return [(n.op_type, tuple(n.input), tuple(n.output)) for n in proto.graph.node]


def io_shapes(proto):
    def shape(v):
        return tuple(d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim)
    return {v.name: shape(v) for v in list(proto.graph.input) + list(proto.graph.output)}


# ---- model ------------------------------------------------------------------------------------

def model_config(info):
    from rtmo_train.config import ModelConfig

    c = dict(info['config'])
    return ModelConfig(c.pop('variant'), deepen=c.pop('deepen'), widen=c.pop('widen'),
                       input_size=tuple(c.pop('input_size')), **c)


def deployed_model(cfg, seed=0):
    import torch

    from rtmo_train.model.rtmo import build_model

    torch.manual_seed(seed)
    return build_model(cfg).eval().deploy()


def export(model, dynamic):
    """Serialized ONNX of ``model`` via ``export_onnx`` (batch 1, or dynamic)."""
    from rtmo_train.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / 'graph.onnx'
        export_onnx(model, path, dynamic_batch=dynamic)
        return path.read_bytes()


def candidate_views(key, value):
    """{description: (array, inverse)} of views an exporter may fold a tensor into.

    ``inverse(full, x)`` writes ``x`` (the view's value) back into ``full`` (a copy of the
    entry), in place.
    """
    views = {'': (value, lambda full, x: full.__setitem__(Ellipsis, x))}
    if value.ndim == 2:
        views['.T'] = (value.T, lambda full, x: full.__setitem__(Ellipsis, x.T))
        if value.shape[0] <= 4:  # GAU gamma / beta rows
            for j in range(value.shape[0]):
                views[f'[{j}]'] = (value[j], lambda full, x, j=j: full.__setitem__(j, x))
    if value.ndim in (1, 2) and value.shape[0] % 3 == 0 and value.shape[0] > 3:
        n = value.shape[0] // 3  # q / k / v thirds of nn.MultiheadAttention's in-projection
        for j in range(3):
            part = slice(j * n, (j + 1) * n)
            views[f'[{j}/3]'] = (value[part],
                                 lambda full, x, p=part: full.__setitem__(p, x))
            if value.ndim == 2:
                views[f'[{j}/3].T'] = (value[part].T,
                                       lambda full, x, p=part: full.__setitem__(p, x.T))
    return views


def position_table_view(table, value):
    """(view, inverse) when ``table`` is ``arange(n)[:, None] / value`` (a folded sine table).

    The inverse finds, per column, the one float32 divisor within 64 ulps of ``1 / row 1`` that
    reproduces every row exactly.
    """
    if table.ndim != 2 or value.shape != table.shape[1:] or table.shape[0] < 2:
        return None
    rows = np.arange(table.shape[0], dtype=np.float32)[:, None]

    def inverse(full, x):
        for j, start in enumerate(np.float32(1) / x[1]):
            cands, lo, hi = [start], start, start
            for _ in range(64):
                lo = np.nextafter(lo, np.float32(-np.inf))
                hi = np.nextafter(hi, np.float32(np.inf))
                cands += [lo, hi]
            found = {float(c) for c in cands if np.array_equal(rows[:, 0] / c, x[:, j])}
            if len(found) != 1:
                raise SystemExit(f'sine table column {j}: {len(found)} divisors reproduce it')
            full[j] = found.pop()

    return rows / value, inverse


def probe_maps(cfg, dynamic, source_proto, source_inits, source_consts):
    """{initializer name: (state-dict key, view description, inverse)} found with a probe."""
    import torch

    probe = deployed_model(cfg)
    gen = torch.Generator().manual_seed(PROBE_SEED)
    with torch.no_grad():
        for value in probe.state_dict().values():
            if value.is_floating_point():  # distinct, positive: no de-duplication, no 1/0
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
    state = {k: v.numpy() for k, v in probe.state_dict().items()}
    proto, inits, consts = read_graph(export(probe, dynamic))
    if [(k, v.shape, v.dtype) for k, v in inits.items()] != \
            [(k, v.shape, v.dtype) for k, v in source_inits.items()]:
        raise SystemExit('probe export: initializer names/shapes differ from the source graph')
    if list(consts) != list(source_consts) or node_list(proto) != node_list(source_proto):
        raise SystemExit('probe export: nodes differ from the source graph')
    maps, unmapped = {}, []
    for name, value in inits.items():
        if name.startswith('model.') and name[6:] in state:
            if not np.array_equal(state[name[6:]], value):
                raise SystemExit(f'probe: {name} is not the state-dict entry it names')
            maps[name] = (name[6:], '', candidate_views(name[6:], state[name[6:]])[''][1])
            continue
        hits = [(key, desc, inverse) for key, full in state.items() if full.dtype == value.dtype
                for desc, (view, inverse) in candidate_views(key, full).items()
                if view.shape == value.shape and np.array_equal(view, value)]
        if not hits:  # the neck's 2-D sine table: row index / dim_t
            for key, full in state.items():
                view = position_table_view(value, full) if full.ndim == 1 else None
                if view is not None and np.array_equal(view[0], value):
                    hits.append((key, f' as arange({value.shape[0]})[:, None] / {key}', view[1]))
        if len(hits) > 1:
            raise SystemExit(f'probe: {name} matches several tensors: {hits}')
        if hits:
            maps[name] = hits[0]
        else:
            unmapped.append(name)
    return maps, unmapped


def recover(cfg, maps, source_inits):
    """A deployed model holding the source graph's values; returns (model, keys not set)."""
    import torch

    model = deployed_model(cfg)
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    written = set()
    for name, (key, _, inverse) in maps.items():
        inverse(state[key], source_inits[name])
        written.add(key)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return model, [k for k in state if k not in written]


# ---- verification -----------------------------------------------------------------------------

def check_reexport(data, source_proto, source_inits, source_consts):
    """(1): max |diff| over the initializers and Constant nodes of a re-export."""
    proto, inits, consts = read_graph(data)
    if list(inits) != list(source_inits) or list(consts) != list(source_consts) \
            or node_list(proto) != node_list(source_proto):
        raise SystemExit('re-export: names or nodes differ from the source graph')
    worst_init = max(float(np.abs(inits[k].astype(np.float64) - source_inits[k]).max())
                     if inits[k].size else 0.0 for k in inits)
    worst_const = max((float(np.abs(np.asarray(consts[k], np.float64)
                                    - np.asarray(source_consts[k], np.float64)).max())
                       if np.asarray(consts[k]).size else 0.0 for k in consts), default=0.0)
    return worst_init, worst_const, len(inits), len(consts)


def frames(count, input_wh):
    """``count`` letterboxed network inputs (3, H, W) from rendered walking sequences."""
    from rtmo_ros.engine.preprocess import letterbox_image
    from rtmo_train.data.synthetic import render_sequence

    sizes = [(320, 240), (640, 480), (480, 640), (400, 400)]
    out, seed = [], 11
    while len(out) < count:
        w, h = sizes[(seed - 11) % len(sizes)]
        for image, _ in render_sequence(seed, 8, w, h):
            out.append(letterbox_image(image, input_wh)[0])
        seed += 1
    return out[:count]


def session(data, optimize=True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(data, opts, providers=['CPUExecutionProvider'])


def held_out_ap(onnx_path, workdir):
    """COCO keypoint AP of ``onnx_path`` through ``PoseEstimator`` (ONNX Runtime) on the json's
    held-out set, regenerated in ``workdir`` (data/synthetic/val: seed 2, 100 images)."""
    import contextlib
    import io

    from package_demo_model import engine_metrics  # scripts/ is this script's sys.path[0]

    from rtmo_train.data.synthetic import make_dataset

    val = pathlib.Path(workdir) / 'val'
    ann = val / 'annotations.json'
    if not ann.exists():
        make_dataset(str(val), 100, 2, 320, 240, max_people=3, height_range=(0.3, 0.9))
    with contextlib.redirect_stdout(io.StringIO()):  # xtcocotools' summary tables
        return engine_metrics(onnx_path, ann, val / 'images')[0]


def max_diff(pairs):
    """Largest |a - b| over (a, b) array pairs."""
    return max(float(np.abs(a - b).max()) for a, b in pairs)


def compare_outputs(source_data, new_data, inputs):
    """(2) and (3): figures of the new graph against the source graph and against itself."""
    old, new = session(source_data), session(new_data)
    before = [old.run(None, {'input': x[None]}) for x in inputs]
    after = [new.run(None, {'input': x[None]}) for x in inputs]

    def count(dets):  # people in one image: rows with score > 0
        return int((dets[..., 4] > 0).sum())

    figures = dict(
        frames=len(inputs), persons=sum(count(d) for d, _ in before),
        count_mismatch=sum(count(d0) != count(d1) for (d0, _), (d1, _) in zip(before, after)),
        dets=max_diff((d0, d1) for (d0, _), (d1, _) in zip(before, after)),
        keypoints=max_diff((k0, k1) for (_, k0), (_, k1) in zip(before, after)))
    # without ONNX Runtime's graph rewrites (its fusions differ around the dynamic Reshapes)
    # both graphs compute the same operations: expect bit-identical outputs
    old, plain = session(source_data, False), session(new_data, False)
    pairs = [(old.run(None, {'input': x[None]}), plain.run(None, {'input': x[None]}))
             for x in inputs]
    figures['plain_dets'] = max_diff((a[0], b[0]) for a, b in pairs)
    figures['plain_keypoints'] = max_diff((a[1], b[1]) for a, b in pairs)
    # batch 4: four different frames, spread over the sequences, vs their batch-1 results
    picks = np.linspace(0, len(inputs) - 1, 4).round().astype(int).tolist()
    dets, kpts = new.run(None, {'input': np.stack([inputs[i] for i in picks])})
    rows = after[0][0].shape[1]
    if dets.shape != (4, rows, 5) or kpts.shape[:2] + kpts.shape[3:] != (4, rows, 3):
        raise SystemExit(f'batch 4 output shapes {dets.shape}, {kpts.shape}')
    figures.update(
        batch4_frames=picks, batch4_persons=[count(d) for d in dets],
        batch4_count_mismatch=sum(count(d) != count(after[i][0]) for d, i in zip(dets, picks)),
        batch4_dets=max_diff((d, after[i][0][0]) for d, i in zip(dets, picks)),
        batch4_keypoints=max_diff((k, after[i][1][0]) for k, i in zip(kpts, picks)))
    return figures


def update_json(info, json_path, data, note):
    """Write ``info`` with the new graph's bytes and sha256 (and ``note``, if given)."""
    info['onnx']['bytes'] = len(data)
    info['onnx']['sha256'] = hashlib.sha256(data).hexdigest()
    info['onnx']['export'] = ('scripts/package_demo_model.py (rtmo_train.export.export_onnx: '
                              'opset 17, dynamic batch, NMS inside, 50 rows)')
    if note:
        info['onnx']['export_note'] = note
    json_path.write_text(json.dumps(info, indent=1, default=float) + '\n')


def export_note(source_sha, source_batch, figures):
    """The json's account of this re-export, with the verification figures."""
    return (
        f're-exported with a dynamic batch (input (B, 3, H, W)) by '
        f'scripts/rebatch_bundled_model.py from the weights recovered from the batch-'
        f'{source_batch} graph that was measured (sha256 {source_sha}; its checkpoint is lost): '
        f'a batch-{source_batch} re-export of the recovered weights has every initializer equal '
        f'to that graph\'s (max |diff| {figures["reexport_init"]:.1e}); on {figures["frames"]} '
        f'rendered frames at batch 1 the new graph finds the same {figures["persons"]} people, '
        f'max |diff| dets {figures["dets"]:.1e}, keypoints {figures["keypoints"]:.1e} px; at '
        f'batch 4 each image equals its batch-1 result (max |diff| dets '
        f'{figures["batch4_dets"]:.1e}, keypoints {figures["batch4_keypoints"]:.1e}). With '
        f'ONNX Runtime graph optimizations off both graphs give bit-identical outputs (diffs '
        f'above: its fusions). The evaluation figures are the measured graph\'s'
        + (f'; re-measured, the new graph\'s held-out AP is {figures["ap_new"]:.4f} (batch-1 '
           f'graph: {figures["ap_old"]:.4f}).' if 'ap_new' in figures else '.'))


def main(argv=None):
    args = parse_args(argv)
    source = pathlib.Path(args.source)
    output = pathlib.Path(args.output) if args.output else source
    source_data = source.read_bytes()
    source_sha = hashlib.sha256(source_data).hexdigest()
    json_in = source.with_suffix('.json')
    info = json.loads((json_in if json_in.exists() else BUNDLED.with_suffix('.json')).read_text())
    cfg = model_config(info)
    source_proto, source_inits, source_consts = read_graph(source_data)
    source_batch = batch_dim(source_proto)
    dynamic_source = source_batch is None
    print(f'[rebatch] source {source} ({len(source_data)} bytes, sha256 {source_sha[:12]}, '
          f'batch {source_batch or "dynamic"}): {len(source_inits)} initializers')

    maps, unmapped = probe_maps(cfg, dynamic_source, source_proto, source_inits, source_consts)
    folded = {n: f'{k}{d}' for n, (k, d, _) in maps.items() if not n.startswith('model.')}
    print(f'[rebatch] probe: {len(maps) - len(folded)} named initializers, {len(folded)} folded '
          f'ones traced back:')
    for name, origin in folded.items():
        print(f'    {name:18s} {tuple(source_inits[name].shape)!s:12s} <- {origin}')
    print(f'[rebatch] not traced back (kept fixed, checked by the re-export): {unmapped}')

    model, unset = recover(cfg, maps, source_inits)
    print(f'[rebatch] state-dict entries not in the graph (kept at their initial values): '
          f'{unset}')

    worst_init, worst_const, n_init, n_const = check_reexport(
        export(model, dynamic_source), source_proto, source_inits, source_consts)
    print(f'[rebatch] (1) re-export (batch {source_batch or "dynamic"}) of the recovered model: '
          f'{n_init} initializers max |diff| {worst_init:.3g}, {n_const} Constant nodes max '
          f'|diff| {worst_const:.3g}')
    if worst_init > 1e-6 or worst_const > 0:
        raise SystemExit('re-export does not reproduce the source graph')

    new_data = export(model, True)
    new_proto = read_graph(new_data)[0]
    print(f'[rebatch] dynamic export: {len(new_data)} bytes, I/O {io_shapes(new_proto)}')
    if batch_dim(new_proto) is not None:
        raise SystemExit('the new graph has a fixed batch')

    figures = compare_outputs(source_data, new_data, frames(args.frames, cfg.input_size))
    figures.update(reexport_init=worst_init)
    print(f'[rebatch] (2) batch 1, new vs source on {figures["frames"]} frames: '
          f'{figures["persons"]} people, {figures["count_mismatch"]} frames with another count, '
          f'max |diff| dets {figures["dets"]:.3g}, keypoints {figures["keypoints"]:.3g}; with '
          f'ONNX Runtime graph optimizations off: dets {figures["plain_dets"]:.3g}, keypoints '
          f'{figures["plain_keypoints"]:.3g}')
    print(f'[rebatch] (3) batch 4 (frames {figures["batch4_frames"]}, people '
          f'{figures["batch4_persons"]}) vs batch 1: {figures["batch4_count_mismatch"]} count '
          f'mismatches, max |diff| dets {figures["batch4_dets"]:.3g}, keypoints '
          f'{figures["batch4_keypoints"]:.3g}')
    if figures['count_mismatch'] or figures['batch4_count_mismatch'] or max(
            figures[k] for k in ('dets', 'keypoints', 'plain_dets', 'plain_keypoints',
                                 'batch4_dets', 'batch4_keypoints')) > TOLERANCE:
        raise SystemExit(f'outputs differ by more than {TOLERANCE}: nothing written')

    with tempfile.TemporaryDirectory() as tmp:
        tmp_onnx = pathlib.Path(tmp) / 'new.onnx'
        tmp_onnx.write_bytes(new_data)
        if not args.skip_ap:
            ap_old, ap_new = held_out_ap(source, tmp), held_out_ap(tmp_onnx, tmp)
            figures.update(ap_old=ap_old['AP'], ap_new=ap_new['AP'])
            same = all(ap_old[k] == ap_new[k] for k in ap_old if isinstance(ap_old[k], float))
            print(f'[rebatch] (4) held-out AP through the engine (ONNX Runtime): source '
                  f'{ap_old["AP"]:.6f}, new {ap_new["AP"]:.6f} '
                  f'({"every COCO figure equal" if same else "figures differ"}; json: '
                  f'{info["evaluation"]["onnxruntime"]["AP"]:.6f})')
            if abs(ap_old['AP'] - ap_new['AP']) > 1e-3:
                raise SystemExit('held-out AP changed: nothing written')
        if new_data == source_data and output == source:
            print(f'[rebatch] {output} is already this dynamic-batch export: unchanged')
            return 0
        staged = output.with_suffix('.onnx.tmp')
        staged.write_bytes(new_data)
        staged.replace(output)
    print(f'[rebatch] wrote {output} ({len(new_data)} bytes, sha256 '
          f'{hashlib.sha256(new_data).hexdigest()[:12]})')
    if not args.no_json:
        # from a batch-1 source: the note; from a dynamic one (a rerun): keep the first note
        note = None if dynamic_source else export_note(source_sha, source_batch, figures)
        update_json(info, output.with_suffix('.json'), new_data, note)
        print(f'[rebatch] updated {output.with_suffix(".json")}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
