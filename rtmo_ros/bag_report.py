"""Ground truth matching, COCO keypoint evaluation and the report of ``rtmo-bag-eval``.

Ground-truth convention: a COCO keypoint JSON whose ``images[i]`` carry the header stamp of
their image message as an integer ``stamp_ns`` (``sec * 10**9 + nanosec``). A file without
``stamp_ns`` may instead name its images ``<sec>_<nanosec>`` (both integers, any extension,
e.g. ``1700000000_033333333.png``). Only the images whose stamp is on the replayed topic are
evaluated (written to ``gt.json``); a frame the node dropped stays in the evaluation with no
prediction, so drops cost recall as they would on the robot.
"""
from dataclasses import dataclass
import json
import math
import pathlib
import re
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


# -- the run and its report ----------------------------------------------------------------------
@dataclass
class RunResult:
    """What one replay produced (the input of the report).

    stamps:        header stamp [ns] of every image on the topic, in bag order.
    poses:         {stamp_ns: Poses} of the frames that got an answer (missing = dropped).
    latency_ms:    {stamp_ns: ms}; offline: engine time (pre + inference + post);
                   online: PersonArray received - image published.
    person_arrays: [(log time ns, CDR bytes)] of every PersonArray, for ``poses_bag/``.
    skeleton:      skeleton name carried by the PersonArrays.
    wall_s:        wall-clock duration of the run [s].
    backend:       inference backend that ran, when known.
    """

    stamps: list
    poses: dict
    latency_ms: dict
    person_arrays: list
    skeleton: str = 'coco17'
    wall_s: float = 0.0
    backend: Optional[str] = None


def summary(result, evaluation, meta):
    """Return the report.json dict: ``meta`` (mode, model, ...) + counts, latency and AP."""
    frames = len(result.stamps)
    answered = sum(1 for s in set(result.stamps) if s in result.poses)
    counts = [len(result.poses[s]) for s in result.stamps if s in result.poses]
    span_s = (max(result.stamps) - min(result.stamps)) / 1e9 if frames > 1 else 0.0
    report = dict(meta)
    report.update({
        'frames': frames, 'processed': answered, 'dropped': frames - answered,
        'drop_rate': (frames - answered) / frames if frames else 0.0,
        'latency_ms': latency_stats(result.latency_ms.get(s) for s in result.poses),
        'persons_per_frame': float(np.mean(counts)) if counts else 0.0,
        'bag_duration_s': span_s, 'wall_s': result.wall_s,
        'output_fps': answered / result.wall_s if result.wall_s > 0 else None,
        'skeleton': result.skeleton, 'backend': result.backend or meta.get('backend'),
    })
    report.update(evaluation or {'ap': None, 'ar': None})
    return report


# -- plots ---------------------------------------------------------------------------------------
def _figure():
    import matplotlib
    matplotlib.use('Agg')  # files only: no display on robots and CI
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    return plt, fig, ax


def plot_latency(path, latencies_ms, mode):
    """Histogram of per-frame latency with the p50 and p95 marked."""
    plt, fig, ax = _figure()
    values = [v for v in latencies_ms if v is not None]
    if values:
        ax.hist(values, bins=min(40, max(5, len(values) // 2)), color='tab:blue')
        for q, style in ((50, '--'), (95, ':')):
            ax.axvline(np.percentile(values, q), color='k', linestyle=style, label=f'p{q}')
        ax.legend()
    what = 'image published -> poses received' if mode == 'online' else 'engine time'
    ax.set(xlabel=f'latency [ms] ({what})', ylabel='frames', title='Latency per frame')
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_persons(path, result, gt_counts=None):
    """Persons per frame over the bag's time (header stamps), dropped frames marked."""
    plt, fig, ax = _figure()
    t0 = min(result.stamps) if result.stamps else 0
    done = [s for s in result.stamps if s in result.poses]
    ax.plot([(s - t0) / 1e9 for s in done], [len(result.poses[s]) for s in done], '.-',
            label='predicted')
    if gt_counts:
        stamps = sorted(gt_counts)
        ax.plot([(s - t0) / 1e9 for s in stamps], [gt_counts[s] for s in stamps], '-',
                color='tab:green', alpha=0.7, label='ground truth')
    dropped = [(s - t0) / 1e9 for s in result.stamps if s not in result.poses]
    if dropped:
        ax.plot(dropped, [0] * len(dropped), '|', color='tab:red', markersize=10,
                label=f'dropped ({len(dropped)})')
    ax.set(xlabel='time [s] (image header stamp)', ylabel='persons', title='Persons per frame')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
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
    fig.savefig(path)
    plt.close(fig)


# -- files ---------------------------------------------------------------------------------------
PLOTS = {'latency': 'latency_hist.png', 'persons': 'persons_over_time.png',
         'precision_recall': 'precision_recall.png'}


def markdown(report):
    """Return report.md text for a report.json dict."""
    lat = report['latency_ms']
    rows = [('bag', f"`{report.get('bag')}` topic `{report.get('topic')}`"),
            ('mode', str(report.get('mode')) + (f" (rate x{report.get('rate', 1.0):g})"
                                                if report.get('mode') == 'online' else '')),
            ('model / backend', f"`{report.get('model')}` / {report.get('backend')}"),
            ('frames / processed / dropped',
             f"{report['frames']} / {report['processed']} / {report['dropped']} "
             f"({100 * report['drop_rate']:.1f} %)"),
            ('latency p50 / p95 / max [ms]',
             f"{_fmt(lat['p50'], 1)} / {_fmt(lat['p95'], 1)} / {_fmt(lat['max'], 1)}"),
            ('persons per frame (mean)', _fmt(report['persons_per_frame'], 2))]
    if report.get('ap') is not None:
        rows += [('AP / AP50 / AP75', f"{_fmt(report['ap'])} / {_fmt(report.get('ap50'))} / "
                                      f"{_fmt(report.get('ap75'))}"),
                 ('AR', _fmt(report['ar'])),
                 ('GT images evaluated', str(report.get('gt_images')))]
    else:
        rows.append(('AP', 'n/a (no ground truth given)'))
    lines = ['# rtmo-bag-eval report', '', '| | |', '|---|---|']
    lines += [f'| {k} | {v} |' for k, v in rows]
    lines += ['', 'Latency: ' + ('time from publishing an image to receiving the node\'s '
                                'PersonArray with its stamp.' if report.get('mode') == 'online'
                                else 'engine time per frame (pre-processing + inference + '
                                'post-processing), no transport.')]
    for key, title in (('latency', 'Latency'), ('persons', 'Persons over time'),
                       ('precision_recall', 'Precision / recall')):
        name = report.get('plots', {}).get(key)
        if name:
            lines += ['', f'## {title}', '', f'![{title}]({name})']
    return '\n'.join(lines) + '\n'


def write_json(path, data):
    pathlib.Path(path).write_text(json.dumps(data, indent=1) + '\n')


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


def write_report(out, result, gt, meta, storage='sqlite3', poses_topic='/poses'):
    """Write every report file into ``out``; return the report.json dict.

    ``gt``: the loaded COCO dict or None. Files: report.json, report.md, the plots,
    predictions.json + gt.json (with GT), poses_bag/ (PersonArray messages on ``poses_topic``).
    """
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    evaluation, precision, gt_counts = None, None, None
    if gt is not None:
        subset, stamp_to_id = match_gt(gt, result.stamps, f"topic {meta.get('topic')}")
        results = coco_results(result.poses, stamp_to_id)
        write_json(out / 'gt.json', subset)
        write_json(out / 'predictions.json', results)
        evaluation = coco_evaluate(subset, results)
        evaluation.update(gt_images=len(subset['images']),
                          gt_images_not_in_bag=len(gt['images']) - len(subset['images']),
                          gt_persons=len(subset['annotations']), predictions=len(results))
        precision = precision_curves(subset, results)
        gt_counts = _gt_counts(subset, stamp_to_id)
    _write_poses_bag(out / 'poses_bag', result.person_arrays, storage, poses_topic)
    report = summary(result, evaluation, meta)
    report['plots'] = _plots(out, result, report['mode'], gt_counts, precision)
    report['files'] = sorted(p.name for p in out.iterdir()) + ['report.json', 'report.md']
    report['files'] = sorted(set(report['files']))
    write_json(out / 'report.json', report)
    (out / 'report.md').write_text(markdown(report))
    return report


def _gt_counts(subset, stamp_to_id):
    """{stamp_ns: number of GT persons with at least one labelled keypoint}."""
    per_image = {}
    for ann in subset['annotations']:
        if ann.get('num_keypoints', 1) > 0:
            per_image[ann['image_id']] = per_image.get(ann['image_id'], 0) + 1
    return {stamp: per_image.get(image_id, 0) for stamp, image_id in stamp_to_id.items()}


def _plots(out, result, mode, gt_counts, precision):
    plot_latency(out / PLOTS['latency'], [result.latency_ms.get(s) for s in result.poses], mode)
    plot_persons(out / PLOTS['persons'], result, gt_counts)
    plots = {'latency': PLOTS['latency'], 'persons': PLOTS['persons']}
    if precision is not None:
        plot_precision_recall(out / PLOTS['precision_recall'], precision)
        plots['precision_recall'] = PLOTS['precision_recall']
    return plots


def _write_poses_bag(path, person_arrays, storage, topic):
    from rtmo_ros import bag_io

    with bag_io.BagWriter(path, storage) as writer:
        writer.add_topic(topic, bag_io.PERSON_ARRAY)  # present even when nothing was published
        for log_ns, rawdata in person_arrays:
            writer.write_raw(topic, bag_io.PERSON_ARRAY, log_ns, rawdata)
