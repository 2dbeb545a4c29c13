"""Ground truth matching, COCO keypoint evaluation and the report of ``rtmo-bag-eval``.

Ground-truth convention: a COCO keypoint JSON whose ``images[i]`` carry the header stamp of
their image message as an integer ``stamp_ns`` (``sec * 10**9 + nanosec``). A file without
``stamp_ns`` may instead name its images ``<sec>_<nanosec>`` (both integers, any extension,
e.g. ``1700000000_033333333.png``). Only the images whose stamp is on the replayed topic are
evaluated (written to ``gt.json``); a frame without an answer (dropped by the node, timed
out, or undecodable) stays in the evaluation with no prediction, so it costs recall as it would
on the robot.

Counting: ``frames`` are the distinct header stamps of the decodable images (the node answers
per stamp, so a repeated stamp is one frame, counted in ``duplicate_stamps``); undecodable images
are skipped as the node skips them and counted in ``invalid``. Every file is written to a
temporary name and renamed into place, so a reader never sees half a file.

Tracking and 3D (:mod:`rtmo_ros.track_metrics`): with GT ``annotations[].track_id`` a pass with
tracking on gets IDF1, HOTA, MOTA and ID switches over every GT frame in stamp order (a frame
without an answer has no predictions: its people are misses); predictions with a track id are
matched to GT per frame by box IoU >= 0.5. With GT ``keypoints_3d`` and ``position_3d`` a pass
with depth gets the 3D keypoint and body position errors [m].
"""
import contextlib
from dataclasses import dataclass, field
import json
import math
import os
import pathlib
import re
import shutil
from typing import Optional

import numpy as np

from rtmo_ros.bag_io import BagError

_FILE_STAMP = re.compile(r'^(\d+)_(\d{1,9})(?:\.\w+)?$')


# -- ground truth --------------------------------------------------------------------------------
def image_stamp(image):
    """Return the header stamp [ns] of a COCO ``images`` entry, or None when it has none."""
    if 'stamp_ns' in image:
        return int(image['stamp_ns'])
    match = _FILE_STAMP.match(pathlib.PurePath(str(image.get('file_name', ''))).name)
    if match:
        return int(match[1]) * 1_000_000_000 + int(match[2])
    return None


def load_gt(path):
    """Load and check a COCO keypoint ground-truth file; return the dict."""
    path = pathlib.Path(path)
    try:
        gt = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BagError(f'ground truth {path} cannot be read as JSON ({exc}); pass a COCO '
                       'keypoint annotation file') from None
    missing = [k for k in ('images', 'annotations', 'categories') if k not in gt]
    if not isinstance(gt, dict) or missing:
        raise BagError(f'ground truth {path} lacks the COCO keys {missing}; pass a COCO '
                       'keypoint file with images, annotations and categories')
    unstamped = [im.get('id') for im in gt['images'] if image_stamp(im) is None]
    if unstamped:
        raise BagError(f'ground truth {path}: {len(unstamped)} images (first id '
                       f'{unstamped[0]}) have neither an integer stamp_ns nor a file_name '
                       '<sec>_<nanosec>; add stamp_ns = header stamp in nanoseconds')
    return gt


def match_gt(gt, bag_stamps, source='the bag'):
    """Keep the GT images whose stamp is in ``bag_stamps``; return (gt subset, {stamp: id}).

    Raises BagError when no image matches (the usual cause: stamps in seconds or from
    another recording).
    """
    stamps = set(bag_stamps)
    images = [im for im in gt['images'] if image_stamp(im) in stamps]
    if not images:
        gt_stamps = sorted(image_stamp(im) for im in gt['images'])
        span = f'{gt_stamps[0]}..{gt_stamps[-1]}' if gt_stamps else 'none'
        bag_span = f'{min(stamps)}..{max(stamps)}' if stamps else 'none'
        raise BagError(f'no ground-truth image stamp matches a header stamp of {source} '
                       f'(GT stamp_ns {span}, bag {bag_span}); stamp_ns must be the image '
                       'header stamp in nanoseconds')
    ids = {im['id'] for im in images}
    subset = dict(gt, images=images,
                  annotations=[a for a in gt['annotations'] if a['image_id'] in ids])
    return subset, {image_stamp(im): im['id'] for im in images}


# -- predictions ---------------------------------------------------------------------------------
def coco_results(poses_by_stamp, stamp_to_id, category_id=1):
    """Return COCO keypoint results (list of dicts) of the frames that have a GT image.

    ``poses_by_stamp``: {stamp_ns: Poses}. Each person gives ``keypoints`` = K * (x, y, score)
    and ``score`` = instance score (mmpose's ``score_mode='bbox'``, as RTMO is evaluated).
    """
    results = []
    for stamp, poses in sorted(poses_by_stamp.items()):
        if stamp not in stamp_to_id:
            continue
        kpts = np.concatenate([poses.keypoints, poses.keypoint_scores[..., None]], axis=-1)
        for i in range(len(poses)):
            results.append({'image_id': stamp_to_id[stamp], 'category_id': category_id,
                            'keypoints': [round(float(v), 3) for v in kpts[i].reshape(-1)],
                            'score': float(poses.scores[i])})
    return results


# -- statistics ----------------------------------------------------------------------------------
def latency_stats(latencies_ms):
    """Return {'p50', 'p95', 'max', 'mean', 'count'} in ms (None values when empty)."""
    values = np.asarray([v for v in latencies_ms if v is not None], np.float64)
    if values.size == 0:
        return {'p50': None, 'p95': None, 'max': None, 'mean': None, 'count': 0}
    return {'p50': float(np.percentile(values, 50)), 'p95': float(np.percentile(values, 95)),
            'max': float(values.max()), 'mean': float(values.mean()), 'count': int(values.size)}


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 'n/a'
    return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


# -- tracking and 3D ---------------------------------------------------------------------------
TRACK_KEYS = ('idf1', 'hota', 'mota', 'id_switches')
KPT3D_KEYS = ('kpt3d_err_median_m', 'kpt3d_err_p90_m', 'position_err_median_m',
              'kpt3d_valid_fraction', 'position_valid_fraction')
# report.json's accuracy keys when there is no ground truth (null, as AP)
NO_EVALUATION = dict.fromkeys(('ap', 'ar') + TRACK_KEYS + KPT3D_KEYS)


def gt_sequence(subset, stamp_to_id):
    """(stamps, GT records per frame) of the evaluated GT images, in stamp order.

    Records as :func:`rtmo_ros.track_metrics.gt_frames_from_coco` returns them.
    """
    from rtmo_ros import track_metrics

    records = dict(zip((im['id'] for im in subset['images']),
                       track_metrics.gt_frames_from_coco(subset)))
    stamps = sorted(stamp_to_id)
    return stamps, [records[stamp_to_id[s]] for s in stamps]


def predicted_people(result, stamps):
    """Per stamp, a list of dicts (``track_id``, ``box``, ``keypoints_3d``, ``position_3d``).

    From ``result.tracks`` (as published); a frame without an answer has nobody; a frame
    answered without tracks has its boxes untracked (-1) with NaN 3D.
    """
    frames = []
    for stamp in stamps:
        poses, tracked = result.poses.get(stamp), result.tracks.get(stamp)
        people = []
        for i in range(0 if poses is None else len(poses)):
            if tracked is None:
                k = poses.keypoints.shape[1]
                people.append({'track_id': -1, 'box': poses.boxes[i],
                               'keypoints_3d': np.full((k, 3), np.nan),
                               'position_3d': np.full(3, np.nan)})
            else:
                people.append({'track_id': int(tracked.track_ids[i]), 'box': poses.boxes[i],
                               'keypoints_3d': tracked.keypoints_3d[i],
                               'position_3d': tracked.position[i]})
        frames.append(people)
    return frames


def track_evaluation(gt_frames, pred_frames, tracking=True, depth=True):
    """TRACK_KEYS and KPT3D_KEYS of one pass (None where they do not apply); return a dict.

    Tracking metrics need ``tracking`` and a ``track_id`` on every GT person; 3D metrics need
    ``depth`` and ``keypoints_3d`` / ``position_3d`` on every GT person. NaN (nothing to
    average) becomes None, so report.json stays strict JSON.
    """
    from rtmo_ros import track_metrics

    out = dict.fromkeys(TRACK_KEYS + KPT3D_KEYS)
    people = [g for frame in gt_frames for g in frame]
    if tracking and people and all(g['track_id'] >= 0 for g in people):
        scores = track_metrics.tracking_metrics(
            track_metrics.track_boxes(gt_frames),
            [[(p['track_id'], p['box']) for p in frame] for frame in pred_frames])
        out.update({key: _finite(scores[key]) for key in TRACK_KEYS})
        out['gt_tracks'] = scores['gt_tracks']
        out['pred_tracks'] = len({p['track_id'] for frame in pred_frames for p in frame} - {-1})
    if depth and people and all('keypoints_3d' in g for g in people):
        errors = track_metrics.keypoint3d_metrics(gt_frames, pred_frames)
        out.update({key: _finite(errors[key]) for key in KPT3D_KEYS})
    return out


def keypoint3d_errors(gt_frames, pred_frames):
    """Every 3D keypoint error [m] that :func:`track_metrics.keypoint3d_metrics` summarises.

    Same matching (Hungarian on box IoU >= 0.5 per frame) and the same keypoints (GT v > 0,
    finite prediction); for the histogram.
    """
    from rtmo_ros.track_metrics import match_boxes

    errors = []
    for gt, pred in zip(gt_frames, pred_frames):
        rows, cols, _ = match_boxes([g['box'] for g in gt], [p['box'] for p in pred])
        for r, c in zip(rows, cols):
            labelled = np.asarray(gt[r]['visibility']) > 0
            diff = (np.asarray(pred[c]['keypoints_3d'], np.float64)
                    - np.asarray(gt[r]['keypoints_3d'], np.float64))[labelled]
            err = np.linalg.norm(diff, axis=1)
            errors += err[np.isfinite(err)].tolist()
    return np.asarray(errors, np.float64)


def _finite(value):
    """A JSON-safe number: NaN / inf -> None, numpy scalars -> Python ones."""
    if value is None:
        return None
    value = value.item() if hasattr(value, 'item') else value
    return value if not isinstance(value, float) or math.isfinite(value) else None


# -- the run and its report ----------------------------------------------------------------------
@dataclass
class RunResult:
    """What one pass over the bag produced (the input of the report).

    stamps:        distinct header stamps [ns] of the decodable images, in bag order.
    poses:         {stamp_ns: Poses} of the frames that got an answer (missing = no answer).
    latency_ms:    {stamp_ns: ms}; offline: engine time (pre + inference + post);
                   online: PersonArray received - image published.
    person_arrays: [(log time ns, CDR bytes)] of every PersonArray, for ``poses_bag/``.
    skeleton:      skeleton name carried by the PersonArrays.
    wall_s:        wall-clock duration of the pass [s].
    backend:       inference backend that ran, when known.
    invalid:       header stamps [ns] of the undecodable images (skipped, not in ``stamps``;
                   -1 where even the stamp is unreadable).
    duplicates:    decodable images whose stamp repeats an earlier one (not in ``stamps``).
    timed_out:     lock-step only: stamps whose answer did not arrive within the frame timeout.
    tracks:        {stamp_ns: rtmo_ros.perception.Tracked} aligned with ``poses`` (track ids,
                   3D keypoints, position, velocity as published); empty when not recorded.
    depth_frames:  frames that had a depth image and camera info (sent online), or None.
    """

    stamps: list
    poses: dict
    latency_ms: dict
    person_arrays: list
    skeleton: str = 'coco17'
    wall_s: float = 0.0
    backend: Optional[str] = None
    invalid: list = field(default_factory=list)
    duplicates: int = 0
    timed_out: Optional[list] = None
    tracks: dict = field(default_factory=dict)
    depth_frames: Optional[int] = None


def pass_counts(result):
    """Frames (with depth), answers, drops, latency and throughput of one pass (report.json)."""
    frames = list(dict.fromkeys(result.stamps))
    answered = [s for s in frames if s in result.poses]
    counts = [len(result.poses[s]) for s in answered]
    depth = {} if result.depth_frames is None else {'depth_frames': result.depth_frames}
    return depth | {
        'frames': len(frames), 'processed': len(answered),
        'dropped': len(frames) - len(answered),
        'drop_rate': (len(frames) - len(answered)) / len(frames) if frames else 0.0,
        'latency_ms': latency_stats(result.latency_ms.get(s) for s in answered),
        'persons_per_frame': float(np.mean(counts)) if counts else 0.0,
        'wall_s': result.wall_s,
        'output_fps': len(answered) / result.wall_s if result.wall_s > 0 else None,
    }


def summary(result, evaluation, meta):
    """Return the report.json dict: ``meta`` (mode, model, ...) + counts, latency and AP."""
    frames = list(dict.fromkeys(result.stamps))
    duplicates = result.duplicates + len(result.stamps) - len(frames)
    span_s = (max(frames) - min(frames)) / 1e9 if len(frames) > 1 else 0.0
    report = dict(meta)
    report.update({'messages': len(frames) + duplicates + len(result.invalid),
                   'invalid': len(result.invalid), 'duplicate_stamps': duplicates})
    report.update(pass_counts(result))
    if result.timed_out is not None:
        report['timed_out'] = len(result.timed_out)
    report.update({'bag_duration_s': span_s, 'skeleton': result.skeleton,
                   'backend': result.backend or meta.get('backend')})
    report.update(evaluation or NO_EVALUATION)
    return report


def realtime_summary(result, evaluation, rate):
    """The ``realtime`` entry of report.json: the pass at the bag's rate times ``rate``."""
    report = {'rate': rate}
    report.update(pass_counts(result))
    report.update(evaluation or NO_EVALUATION)
    return report


# -- plots ---------------------------------------------------------------------------------------
def _figure():
    import matplotlib
    matplotlib.use('Agg')  # files only: no display on robots and CI
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    return plt, fig, ax


def plot_latency(path, series, mode):
    """Histogram of per-frame latency; ``series``: {label: [ms]}, p50 and p95 of the last one.

    Online, the series are the lock-step pass (one frame in flight) and the real-time pass.
    """
    plt, fig, ax = _figure()
    shown = {label: [v for v in values if v is not None] for label, values in series.items()}
    shown = {label: values for label, values in shown.items() if values}
    for (label, values), colour in zip(shown.items(), ('tab:blue', 'tab:orange')):
        ax.hist(values, bins=min(40, max(5, len(values) // 2)), color=colour, alpha=0.6,
                label=label)
    if shown:
        label, last = list(shown.items())[-1]
        for q, style in ((50, '--'), (95, ':')):
            ax.axvline(np.percentile(last, q), color='k', linestyle=style,
                       label=f'p{q}' + (f' ({label})' if len(shown) > 1 else ''))
        ax.legend()
    what = 'image published -> poses received' if mode == 'online' else 'engine time'
    ax.set(xlabel=f'latency [ms] ({what})', ylabel='frames', title='Latency per frame')
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=pathlib.Path(path).suffix.lstrip('.') or 'png')


def plot_persons(path, result, gt_counts=None, realtime=None):
    """Persons per frame over the bag's time (header stamps), frames without an answer marked.

    With ``realtime`` (online), the frames that pass dropped are marked as well.
    """
    plt, fig, ax = _figure()
    t0 = min(result.stamps) if result.stamps else 0
    done = [s for s in result.stamps if s in result.poses]
    ax.plot([(s - t0) / 1e9 for s in done], [len(result.poses[s]) for s in done], '.-',
            label='predicted')
    if gt_counts:
        stamps = sorted(gt_counts)
        ax.plot([(s - t0) / 1e9 for s in stamps], [gt_counts[s] for s in stamps], '-',
                color='tab:green', alpha=0.7, label='ground truth')
    missed = [(s - t0) / 1e9 for s in result.stamps if s not in result.poses]
    if missed:
        what = 'timed out' if result.timed_out is not None else 'dropped'
        ax.plot(missed, [0] * len(missed), '|', color='tab:red', markersize=10,
                label=f'{what} ({len(missed)})')
    if realtime is not None:
        dropped = [(s - t0) / 1e9 for s in realtime.stamps if s not in realtime.poses]
        if dropped:
            ax.plot(dropped, [-0.1] * len(dropped), '|', color='tab:orange', markersize=10,
                    label=f'dropped in real time ({len(dropped)})')
    ax.set(xlabel='time [s] (image header stamp)', ylabel='persons', title='Persons per frame')
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_precision_recall(path, precision):
    """Precision/recall curves from COCOeval's accumulated ``precision`` [T, R, K, A, M].

    T = OKS thresholds .50:.05:.95, R = 101 recall points; category 0, area 'all', the one
    maxDets (20) of keypoint evaluation. Entries of -1 (undefined) are left out.
    """
    plt, fig, ax = _figure()
    recall = np.linspace(0.0, 1.0, precision.shape[1])
    curves = precision[:, :, 0, 0, -1]
    for index, label in ((0, 'OKS 0.50'), (5, 'OKS 0.75')):
        p = np.where(curves[index] < 0, np.nan, curves[index])
        ax.plot(recall, p, label=label)
    defined = curves >= 0
    counts = defined.sum(axis=0)
    if counts.any():  # mean over the thresholds where precision is defined
        mean = np.where(defined, curves, 0).sum(axis=0) / np.maximum(counts, 1)
        ax.plot(recall, np.where(counts > 0, mean, np.nan), 'k--', label='mean OKS .50:.95')
    ax.set(xlabel='recall', ylabel='precision', xlim=(0, 1), ylim=(0, 1.02),
           title='Precision / recall (COCO keypoints, area all, maxDets 20)')
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _rgb(track_id):
    """Matplotlib colour of a track id: the annotated images' colour (engine.draw)."""
    from rtmo_ros.engine.draw import person_color

    b, g, r = person_color(int(track_id))
    return (r / 255, g / 255, b / 255)


def plot_tracks(path, stamps, gt_frames, pred_frames):
    """Box x centre [px] over time, one colour per predicted track id; GT tracks in grey.

    ``stamps``: header stamps [ns] of the frames; ``gt_frames`` / ``pred_frames``: per frame,
    records with ``track_id`` and ``box`` (:func:`gt_sequence`, :func:`predicted_people`).
    An id switch shows as a colour change along one grey line.
    """
    plt, fig, ax = _figure()
    t0 = min(stamps) if stamps else 0

    def series(frames):
        out = {}
        for stamp, frame in zip(stamps, frames):
            for person in frame:
                x1, _, x2, _ = (float(v) for v in person['box'])
                out.setdefault(person['track_id'], []).append(((stamp - t0) / 1e9,
                                                               (x1 + x2) / 2))
        return out

    for i, points in enumerate(series(gt_frames).values()):
        t, x = zip(*points)
        ax.plot(t, x, '-', color='0.75', linewidth=4, label='ground truth' if i == 0 else None)
    for track_id, points in sorted(series(pred_frames).items()):
        t, x = zip(*points)
        if track_id < 0:
            ax.plot(t, x, '.', color='0.4', markersize=3, label='untracked')
        else:
            ax.plot(t, x, '.', color=_rgb(track_id), markersize=4)
            ax.annotate(str(track_id), (t[0], x[0]), fontsize=7, color=_rgb(track_id),
                        xytext=(2, 2), textcoords='offset points')
    ax.set(xlabel='time [s] (image header stamp)', ylabel='box centre x [px]',
           title='People over time, coloured by track id (labels: id at its first frame)')
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc='upper right', fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_kpt3d_errors(path, errors, median=None, p90=None):
    """Histogram of the 3D keypoint errors [m] (every matched, labelled, lifted keypoint)."""
    plt, fig, ax = _figure()
    errors = np.asarray(errors, np.float64)
    if errors.size:
        top = max(float(np.percentile(errors, 99)), 1e-3)
        ax.hist(np.clip(errors, 0, top), bins=40, range=(0, top), color='tab:purple', alpha=0.8)
        for value, style, name in ((median, '--', 'median'), (p90, ':', 'p90')):
            if value is not None:
                ax.axvline(value, color='k', linestyle=style, label=f'{name} {value:.3f} m')
        ax.legend()
    ax.set(xlabel='3D keypoint error [m] (clipped at p99)', ylabel='keypoints',
           title='3D keypoint error against ground truth')
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


# -- files ---------------------------------------------------------------------------------------
PLOTS = {'latency': 'latency_hist.png', 'persons': 'persons_over_time.png',
         'precision_recall': 'precision_recall.png', 'tracks': 'tracks_over_time.png',
         'kpt3d_error': 'kpt3d_error_hist.png'}
# Every name a run may write into its output folder; a new run removes them all first, so the
# files of an earlier run (e.g. its predictions when this one has no ground truth) never mix in.
OUTPUTS = ('report.json', 'report.md', 'predictions.json', 'predictions_realtime.json',
           'gt.json', *PLOTS.values(), 'poses_bag', 'node.log')
_TMP = '.tmp-'  # temporary names: '.<name>.tmp-<pid><suffix>', renamed onto <name>


def temporary_name(path):
    """Hidden sibling of ``path`` that a run writes first and renames onto ``path``."""
    path = pathlib.Path(path)
    return path.with_name(f'.{path.name}{_TMP}{os.getpid()}{path.suffix}')


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path to write; on success rename it onto ``path`` (os.replace).

    A file is replaced atomically; a folder (a bag) replaces an earlier one that is removed
    just before. On failure the temporary file or folder is removed and ``path`` is untouched.
    """
    path, tmp = pathlib.Path(path), temporary_name(path)
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _remove(path):
    path = pathlib.Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def clear_outputs(out, names=OUTPUTS, keep=()):
    """Remove an earlier run's ``names`` (and their temporary files) from the folder ``out``.

    ``keep``: paths never removed (the input bag and ground truth, when they live in ``out``).
    A ``poses_bag`` folder that is not a rosbag2 is left alone and reported (not ours).
    """
    out = pathlib.Path(out)
    if not out.is_dir():
        return
    keep = [pathlib.Path(k).resolve() for k in keep]
    old_bag = out / 'poses_bag'
    if 'poses_bag' in names and old_bag.is_dir() and not (old_bag / 'metadata.yaml').is_file():
        raise BagError(f'{old_bag} exists and is not a bag from an earlier run; remove it or '
                       'choose another --out')
    stale = [out / name for name in names]
    stale += [p for p in out.iterdir()
              if p.name.startswith('.') and _TMP in p.name
              and p.name[1:].split(_TMP)[0] in names]
    for path in stale:
        resolved = path.resolve()
        if any(k == resolved or resolved in k.parents for k in keep):
            continue
        _remove(path)


def _passes(report):
    """Markdown rows of the counts and latency of the run (both passes when online)."""
    lat = report['latency_ms']
    counts = (f"{report['frames']} / {report['processed']} / {report['dropped']} "
              f"({100 * report['drop_rate']:.1f} %)")
    rows = [('image messages / undecodable (skipped) / repeated stamps',
             f"{report.get('messages', report['frames'])} / {report.get('invalid', 0)} / "
             f"{report.get('duplicate_stamps', 0)}")]
    realtime = report.get('realtime')
    if realtime is None:
        rows += [('frames / processed / dropped', counts),
                 ('latency p50 / p95 / max [ms]',
                  f"{_fmt(lat['p50'], 1)} / {_fmt(lat['p95'], 1)} / {_fmt(lat['max'], 1)}")]
        return rows
    rt_lat = realtime['latency_ms']
    rows += [('lock-step (every frame): frames / answered / timed out',
              f"{report['frames']} / {report['processed']} / {report.get('timed_out', 0)}"),
             ('lock-step latency p50 / p95 / max [ms] (one frame in flight)',
              f"{_fmt(lat['p50'], 1)} / {_fmt(lat['p95'], 1)} / {_fmt(lat['max'], 1)}"),
             (f"real time (x{realtime['rate']:g}): frames / processed / dropped",
              f"{realtime['frames']} / {realtime['processed']} / {realtime['dropped']} "
              f"({100 * realtime['drop_rate']:.1f} %)"),
             ('real-time latency p50 / p95 / max [ms]',
              f"{_fmt(rt_lat['p50'], 1)} / {_fmt(rt_lat['p95'], 1)} / {_fmt(rt_lat['max'], 1)}")]
    return rows


def _perception(report):
    """'on / on / on (depth topic, info topic; N frames with depth)' of the report's flags."""
    def word(flag):
        return 'on' if flag else 'off'
    text = ' / '.join(word(report.get(k)) for k in ('tracking', 'smoothing', 'depth'))
    if report.get('depth'):
        text += (f" (`{report.get('depth_topic')}`, `{report.get('camera_info_topic')}`; "
                 f"{report.get('depth_frames')} of {report['frames']} frames with depth)")
    return text


def _track_rows(report, every):
    """Markdown rows of the tracking and 3D figures (n/a rows say why)."""
    realtime = report.get('realtime')
    if not report.get('tracking'):
        rows = [('IDF1 / HOTA / MOTA / ID switches', 'n/a (tracking off)')]
    elif report.get('idf1') is None:
        rows = [('IDF1 / HOTA / MOTA / ID switches', 'n/a (no track_id in the ground truth)')]
    else:
        def figures(r):
            return (f"{_fmt(r.get('idf1'))} / {_fmt(r.get('hota'))} / {_fmt(r.get('mota'))} / "
                    f"{_fmt(r.get('id_switches'))}")
        rows = [(f'IDF1 / HOTA / MOTA / ID switches{every}', figures(report))]
        if realtime is not None:
            rows.append(('IDF1 / HOTA / MOTA / ID switches in real time (drops are misses)',
                         figures(realtime)))
    if report.get('kpt3d_valid_fraction') is not None:
        rows += [(f'3D keypoint error median / p90 [m]{every}',
                  f"{_fmt(report['kpt3d_err_median_m'])} / {_fmt(report['kpt3d_err_p90_m'])}"),
                 ('body position error median [m]', _fmt(report['position_err_median_m'])),
                 ('labelled GT keypoints with a 3D point',
                  f"{100 * report['kpt3d_valid_fraction']:.1f} %")]
    elif report.get('depth'):
        rows.append(('3D keypoint error', 'n/a (no keypoints_3d in the ground truth)'))
    return rows


def markdown(report):
    """Return report.md text for a report.json dict."""
    online = report.get('mode') == 'online'
    realtime = report.get('realtime')
    rows = [('bag', f"`{report.get('bag')}` topic `{report.get('topic')}`"),
            ('mode', str(report.get('mode')) + (f" (rate x{report.get('rate') or 1.0:g})"
                                                if online else '')),
            ('model / backend', f"`{report.get('model')}` / {report.get('backend')}")]
    if 'tracking' in report:
        rows.append(('tracking / smoothing / depth', _perception(report)))
    rows += _passes(report)
    rows.append(('persons per frame (mean)', _fmt(report['persons_per_frame'], 2)))
    every = ' (every frame, lock-step)' if realtime is not None else ''
    if report.get('ap') is not None:
        rows += [(f'AP / AP50 / AP75{every}',
                  f"{_fmt(report['ap'])} / {_fmt(report.get('ap50'))} / "
                  f"{_fmt(report.get('ap75'))}"),
                 (f'AR{every}', _fmt(report['ar']))]
        if realtime is not None:
            rows.append(('AP / AR in real time (drops are misses)',
                         f"{_fmt(realtime.get('ap'))} / {_fmt(realtime.get('ar'))}"))
        rows += _track_rows(report, every)
        rows.append(('GT images evaluated', str(report.get('gt_images'))))
    else:
        rows.append(('AP', 'n/a (no ground truth given)'))
    lines = ['# rtmo-bag-eval report', '', '| | |', '|---|---|']
    lines += [f'| {k} | {v} |' for k, v in rows]
    if realtime is not None:
        lines += ['', 'Accuracy: every frame is sent to the node when its answer to the previous '
                  'one has arrived (lock-step), so the AP does not depend on the machine\'s '
                  'speed. Real time: the frames are sent at their recorded spacing; frames '
                  'arriving while the node is busy are dropped (newest-frame policy) and count '
                  'as misses in the real-time AP. Latency: time from publishing an image to '
                  'receiving the node\'s PersonArray with its stamp.']
    else:
        lines += ['', 'Latency: ' + ('time from publishing an image to receiving the node\'s '
                                    'PersonArray with its stamp.' if online
                                    else 'engine time per frame (pre-processing + inference + '
                                    'post-processing), no transport.')]
    for key, title in (('latency', 'Latency'), ('persons', 'Persons over time'),
                       ('precision_recall', 'Precision / recall'),
                       ('tracks', 'People over time by track id'),
                       ('kpt3d_error', '3D keypoint error')):
        name = report.get('plots', {}).get(key)
        if name:
            lines += ['', f'## {title}', '', f'![{title}]({name})']
    return '\n'.join(lines) + '\n'


def write_text(path, text):
    """Write ``text`` to ``path`` atomically (temporary file + os.replace)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, data):
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=1) + '\n')


# -- evaluation ----------------------------------------------------------------------------------
STAT_KEYS = {'AP': 'ap', 'AP .5': 'ap50', 'AP .75': 'ap75', 'AP (M)': 'ap_m', 'AP (L)': 'ap_l',
             'AR': 'ar', 'AR .5': 'ar50', 'AR .75': 'ar75', 'AR (M)': 'ar_m', 'AR (L)': 'ar_l'}


def coco_evaluate(gt, results):
    """COCO keypoint AP/AR of ``results`` on ``gt`` (dicts), as mmpose evaluates RTMO.

    Returns {'ap', 'ap50', ..., 'ar', ...} (floats; -1 where COCOeval leaves a value
    undefined). No prediction at all gives AP = AR = 0 when there is ground truth.
    """
    from rtmo_train.evaluation import evaluate_keypoints

    if not results:  # xtcocotools' loadRes cannot take an empty list
        value = 0.0 if any(a.get('num_keypoints', 1) > 0 for a in gt['annotations']) else -1.0
        return {key: value for key in STAT_KEYS.values()}
    stats = evaluate_keypoints(gt, results, mode='coco')
    return {STAT_KEYS[name]: value for name, value in stats.items() if name in STAT_KEYS}


def precision_curves(gt, results):
    """COCOeval's accumulated precision [T, R, K, A, M] for the PR plot, or None.

    Adapter: ``rtmo_train.evaluation`` returns the summary numbers only, so this runs the same
    xtcocotools evaluation (keypoints, COCO17 sigmas, use_area, maxDets 20) to keep the array.
    """
    if not results or not gt['annotations']:
        return None
    import contextlib
    import io

    from xtcocotools.coco import COCO
    from xtcocotools.cocoeval import COCOeval

    from rtmo_ros.engine.skeleton import skeleton_for

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = json.loads(json.dumps(gt))
        coco.createIndex()
        num_kpts = len(gt['categories'][0]['keypoints'])
        ev = COCOeval(coco, coco.loadRes(list(results)), 'keypoints',
                      np.asarray(skeleton_for(num_kpts).sigmas, np.float64), True)
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
    return np.asarray(ev.eval['precision'])


def write_report(out, result, gt, meta, storage='sqlite3', poses_topic='/poses',
                 realtime=None, realtime_topic='/poses_realtime'):
    """Write every report file into ``out``; return the report.json dict.

    ``result``: the pass that gives the accuracy (offline, or online lock-step); ``realtime``:
    the online pass at the bag's rate (report.json's ``realtime``), or None. ``gt``: the loaded
    COCO dict or None. Files: report.json, report.md, the plots, predictions.json (+
    predictions_realtime.json) and gt.json with GT, poses_bag/ (PersonArrays on ``poses_topic``,
    the real-time pass's on ``realtime_topic``). Each file is written atomically.
    """
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    evaluation, rt_evaluation, precision, gt_counts = None, None, None, None
    tracking, depth = bool(meta.get('tracking')), bool(meta.get('depth'))
    sequence = (list(dict.fromkeys(result.stamps)), None, None)  # (stamps, GT, predictions)
    written = []
    if gt is not None:
        stamps = list(result.stamps) + [s for s in result.invalid if s >= 0]
        subset, stamp_to_id = match_gt(gt, stamps, f"topic {meta.get('topic')}")
        write_json(out / 'gt.json', subset)
        evaluation = _evaluate(out / 'predictions.json', subset, result, stamp_to_id)
        evaluation.update(gt_images=len(subset['images']),
                          gt_images_not_in_bag=len(gt['images']) - len(subset['images']),
                          gt_persons=len(subset['annotations']))
        written += ['gt.json', 'predictions.json']
        if realtime is not None:
            rt_evaluation = _evaluate(out / 'predictions_realtime.json', subset, realtime,
                                      stamp_to_id)
            written.append('predictions_realtime.json')
        precision = precision_curves(subset, coco_results(result.poses, stamp_to_id))
        gt_counts = _gt_counts(subset, stamp_to_id)
        stamps, gt_frames = gt_sequence(subset, stamp_to_id)
        sequence = (stamps, gt_frames, predicted_people(result, stamps))
        evaluation.update(track_evaluation(gt_frames, sequence[2], tracking, depth))
        if realtime is not None:
            rt_evaluation.update(track_evaluation(gt_frames, predicted_people(realtime, stamps),
                                                  tracking, depth))
    topics = {poses_topic: result.person_arrays}
    if realtime is not None:
        topics[realtime_topic] = realtime.person_arrays
    _write_poses_bag(out / 'poses_bag', topics, storage)
    report = summary(result, evaluation, meta)
    if realtime is not None:
        report['realtime'] = realtime_summary(realtime, rt_evaluation, meta.get('rate'))
    report['plots'] = _plots(out, result, report['mode'], gt_counts, precision, realtime)
    report['plots'].update(_track_plots(out, result, sequence, report, tracking))
    written += ['poses_bag', 'report.json', 'report.md', *report['plots'].values()]
    if (out / 'node.log').is_file() and report['mode'] == 'online':
        written.append('node.log')
    report['files'] = sorted(set(written))
    write_json(out / 'report.json', report)
    write_text(out / 'report.md', markdown(report))
    return report


def _evaluate(path, subset, result, stamp_to_id):
    """Write the COCO results of ``result`` to ``path``; return their AP / AR dict."""
    results = coco_results(result.poses, stamp_to_id)
    write_json(path, results)
    evaluation = coco_evaluate(subset, results)
    evaluation['predictions'] = len(results)
    return evaluation


def _gt_counts(subset, stamp_to_id):
    """{stamp_ns: number of GT persons with at least one labelled keypoint}."""
    per_image = {}
    for ann in subset['annotations']:
        if ann.get('num_keypoints', 1) > 0:
            per_image[ann['image_id']] = per_image.get(ann['image_id'], 0) + 1
    return {stamp: per_image.get(image_id, 0) for stamp, image_id in stamp_to_id.items()}


def _plots(out, result, mode, gt_counts, precision, realtime=None):
    series = {'lock-step' if realtime is not None else mode:
              [result.latency_ms.get(s) for s in result.poses]}
    if realtime is not None:
        series['real time'] = [realtime.latency_ms.get(s) for s in realtime.poses]
    plot_latency(out / PLOTS['latency'], series, mode)
    plot_persons(out / PLOTS['persons'], result, gt_counts, realtime)
    plots = {'latency': PLOTS['latency'], 'persons': PLOTS['persons']}
    if precision is not None:
        plot_precision_recall(out / PLOTS['precision_recall'], precision)
        plots['precision_recall'] = PLOTS['precision_recall']
    return plots


def _track_plots(out, result, sequence, report, tracking):
    """The people-by-track plot (tracking on) and the 3D error histogram (3D evaluated)."""
    stamps, gt_frames, pred_frames = sequence
    plots = {}
    if tracking:
        if pred_frames is None:
            pred_frames = predicted_people(result, stamps)
        plot_tracks(out / PLOTS['tracks'], stamps, gt_frames or [[] for _ in stamps],
                    pred_frames)
        plots['tracks'] = PLOTS['tracks']
    if report.get('kpt3d_err_median_m') is not None:
        plot_kpt3d_errors(out / PLOTS['kpt3d_error'], keypoint3d_errors(gt_frames, pred_frames),
                          report['kpt3d_err_median_m'], report['kpt3d_err_p90_m'])
        plots['kpt3d_error'] = PLOTS['kpt3d_error']
    return plots


def _write_poses_bag(path, topics, storage):
    """Write {topic: [(log ns, CDR bytes)]} of PersonArrays as the rosbag2 folder ``path``."""
    from rtmo_ros import bag_io

    path, tmp = pathlib.Path(path), temporary_name(path)
    _remove(tmp)
    try:  # rosbag2 names its files after the folder: write <tmp>/<name>, then rename that
        tmp.mkdir()
        with bag_io.BagWriter(tmp / path.name, storage) as writer:
            for topic, person_arrays in topics.items():
                writer.add_topic(topic, bag_io.PERSON_ARRAY)  # present even when empty
                for log_ns, rawdata in person_arrays:
                    writer.write_raw(topic, bag_io.PERSON_ARRAY, log_ns, rawdata)
        _remove(path)
        os.replace(tmp / path.name, path)
    finally:
        _remove(tmp)
