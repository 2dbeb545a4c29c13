"""rtmo-bag-eval end to end: offline engine runs, online replay into the real node over DDS.

The model is the bundled RTMO-tiny (320x320, fast on CPU, needs no shared fixture); these tests
check the plumbing (files, counts, stamps, latency). Its accuracy is pinned in
test_bundled_model.py; here the ground truth itself is fed in to pin the scoring.
"""
import json

import numpy as np
import pytest

from rtmo_ros import bag_eval, bag_io, bag_report, demo_bag
from rtmo_ros.bag_report import RunResult
from rtmo_ros.engine import zoo
from rtmo_ros.engine.poses import Poses

FRAMES = 6
REPORT_KEYS = {'ap', 'ar', 'frames', 'dropped', 'latency_ms', 'mode', 'model', 'backend',
               'processed', 'topic', 'plots'}


@pytest.fixture(scope='module')
def model():
    return str(zoo.bundled_path())


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """A small raw sqlite3 demo bag (320x240) and its GT."""
    out = tmp_path_factory.mktemp('demo')
    return demo_bag.write_demo_bag(out, frames=FRAMES, seed=2, width=320, height=240,
                                   progress=False)


def run(bag, gt, out, model, **kwargs):
    return bag_eval.evaluate_bag(bag, gt=gt, model=model, backend='onnxruntime', out=out,
                                 progress=False, **kwargs)


def check_poses_bag(out, stamps):
    """poses_bag/ reads back with rosbags: one PersonArray per answered frame, same stamps."""
    arrays = bag_io.read_person_arrays(out / 'poses_bag', bag_eval.POSES_TOPIC)
    assert [bag_io.stamp_ns(msg.header) for _, msg in arrays] == stamps
    assert all(msg.header.frame_id == 'camera_optical' and msg.skeleton == 'coco17'
               for _, msg in arrays)
    return arrays


def test_offline_report(tmp_path, demo, model):
    bag, gt_path = demo
    report = run(bag, gt_path, tmp_path, model)
    for name in ('report.json', 'report.md', 'predictions.json', 'gt.json',
                 'latency_hist.png', 'persons_over_time.png'):
        assert (tmp_path / name).stat().st_size > 0, name
    on_disk = json.loads((tmp_path / 'report.json').read_text())
    assert REPORT_KEYS <= set(on_disk) and on_disk['mode'] == 'offline'
    assert (on_disk['frames'], on_disk['processed'], on_disk['dropped']) == (FRAMES, FRAMES, 0)
    assert on_disk['backend'] == 'onnxruntime' and 0.0 <= on_disk['ap'] <= 1.0
    lat = on_disk['latency_ms']
    assert lat['count'] == FRAMES and 0 < lat['p50'] <= lat['p95'] <= lat['max']
    gt = json.loads(gt_path.read_text())
    assert json.loads((tmp_path / 'gt.json').read_text())['images'] == gt['images']
    predictions = json.loads((tmp_path / 'predictions.json').read_text())
    assert predictions and {p['image_id'] for p in predictions} <= {i['id'] for i in gt['images']}
    assert all(len(p['keypoints']) == 51 and p['category_id'] == 1 for p in predictions)
    arrays = check_poses_bag(tmp_path, [im['stamp_ns'] for im in gt['images']])
    assert sum(len(msg.persons) for _, msg in arrays) == len(predictions)
    assert '| frames / processed / dropped | 6 / 6 / 0' in (tmp_path / 'report.md').read_text()
    assert report == on_disk


def test_offline_mcap_compressed(tmp_path, model):
    bag, gt_path = demo_bag.write_demo_bag(tmp_path / 'demo', frames=2, seed=4, width=320,
                                           height=240, compressed=True, storage='mcap',
                                           progress=False)
    report = run(bag, gt_path, tmp_path / 'out', model)
    assert report['topic'] == demo_bag.COMPRESSED_TOPIC
    assert (report['frames'], report['dropped']) == (2, 0)
    assert any(p.suffix == '.mcap' for p in (tmp_path / 'out' / 'poses_bag').iterdir())
    check_poses_bag(tmp_path / 'out', [json.loads(gt_path.read_text())['images'][i]['stamp_ns']
                                       for i in range(2)])


def test_online_replay_into_the_node(tmp_path, demo, model):
    pytest.importorskip('rclpy')
    bag, gt_path = demo
    report = run(bag, gt_path, tmp_path, model, mode='online', rate=1.0)
    assert report['mode'] == 'online' and report['frames'] == FRAMES
    assert 1 <= report['processed'] <= FRAMES
    assert report['processed'] + report['dropped'] == FRAMES
    lat = report['latency_ms']
    assert lat['count'] == report['processed']
    assert 0 < lat['p50'] <= lat['p95'] <= lat['max'] < 60_000
    gt = json.loads(gt_path.read_text())
    stamps = [im['stamp_ns'] for im in gt['images']]
    arrays = bag_io.read_person_arrays(tmp_path / 'poses_bag', bag_eval.POSES_TOPIC)
    received = [bag_io.stamp_ns(m.header) for _, m in arrays]
    assert received == sorted(received) and set(received) <= set(stamps)
    assert all(m.header.frame_id == 'camera_optical' for _, m in arrays)
    assert received[-1] == stamps[-1]  # newest-frame policy: the last frame is never dropped
    assert len(received) == report['processed']
    assert report['backend'] == 'onnxruntime'
    assert 'rtmo_pose' in (tmp_path / 'node.log').read_text()


def gt_as_poses(gt):
    """{stamp_ns: Poses} holding the ground truth itself (labelled keypoints score 1)."""
    by_image = {im['id']: [] for im in gt['images']}
    for ann in gt['annotations']:
        by_image[ann['image_id']].append(ann)
    out = {}
    for image in gt['images']:
        anns = by_image[image['id']]
        kpts = np.asarray([a['keypoints'] for a in anns], np.float32).reshape(len(anns), 17, 3)
        boxes = np.asarray([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)],
                           np.float32).reshape(-1, 4)
        out[image['stamp_ns']] = Poses(boxes, np.ones(len(anns), np.float32),
                                       kpts[..., :2], (kpts[..., 2] > 0).astype(np.float32))
    return out


def test_ground_truth_as_predictions_scores_ap_1(tmp_path, demo):
    _, gt_path = demo
    gt = json.loads(gt_path.read_text())
    poses = gt_as_poses(gt)
    stamps = [im['stamp_ns'] for im in gt['images']]
    result = RunResult(stamps=stamps, poses=poses, latency_ms=dict.fromkeys(stamps, 1.0),
                       person_arrays=[])
    report = bag_report.write_report(tmp_path, result, gt, {'mode': 'offline', 'topic': 't'})
    assert report['ap'] == pytest.approx(1.0) and report['ar'] == pytest.approx(1.0)
    assert report['ap50'] == pytest.approx(1.0)
    assert (tmp_path / 'precision_recall.png').stat().st_size > 0
    # a dropped frame stays in the evaluation: its people are missed
    del poses[stamps[0]]
    missed = bag_report.write_report(tmp_path / 'drop', result, gt, {'mode': 'online'})
    assert missed['dropped'] == 1 and missed['ar'] < 1.0


def test_file_name_stamps_are_accepted(demo):
    _, gt_path = demo
    gt = json.loads(gt_path.read_text())
    for image in gt['images']:
        del image['stamp_ns']  # file_name stays '<sec>_<nanosec>.png'
    stamps = [demo_bag.frame_stamp(i) for i in range(FRAMES)]
    subset, stamp_to_id = bag_report.match_gt(gt, stamps[:3])
    assert len(subset['images']) == 3 and sorted(stamp_to_id) == stamps[:3]
    assert {a['image_id'] for a in subset['annotations']} <= set(stamp_to_id.values())


def one_error_line(capsys, argv):
    assert bag_eval.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('rtmo-bag-eval: error: ') and '\n' not in err
    return err


def test_clear_errors(tmp_path, demo, capsys):
    bag, gt_path = demo
    base = ['--model', 'unused.onnx', '--out', str(tmp_path / 'out'), '--quiet']
    err = one_error_line(capsys, [str(bag), '--topic', '/camera/nope'] + base)
    assert '/camera/nope' in err and '/camera/image_raw' in err
    garbage = tmp_path / 'garbage.db3'
    garbage.write_bytes(b'\0garbage' * 64)
    assert str(garbage) in one_error_line(capsys, [str(garbage)] + base)
    (tmp_path / 'empty').mkdir()
    assert 'metadata.yaml' in one_error_line(capsys, [str(tmp_path / 'empty')] + base)
    gt = json.loads(gt_path.read_text())
    for image in gt['images']:
        image['stamp_ns'] += 1  # off by one nanosecond: nothing matches
    shifted = tmp_path / 'shifted.json'
    shifted.write_text(json.dumps(gt))
    err = one_error_line(capsys, [str(bag), '--gt', str(shifted)] + base)
    assert 'no ground-truth image stamp matches' in err and 'stamp_ns' in err
    for image in gt['images']:
        del image['stamp_ns'], image['file_name']
    shifted.write_text(json.dumps(gt))
    assert 'stamp_ns' in one_error_line(capsys, [str(bag), '--gt', str(shifted)] + base)
    assert not (tmp_path / 'out').exists()  # nothing ran, nothing written


def test_report_without_ground_truth(tmp_path):
    stamps = [demo_bag.frame_stamp(i) for i in range(4)]
    poses = {s: Poses.empty(17) for s in stamps[1:]}
    result = RunResult(stamps=stamps, poses=poses, latency_ms=dict.fromkeys(stamps, 2.0),
                       person_arrays=[], backend='onnxruntime')
    report = bag_report.write_report(tmp_path, result, None, {'mode': 'online', 'rate': 2.0})
    assert report['ap'] is None and report['ar'] is None and report['dropped'] == 1
    assert report['latency_ms']['count'] == 3 and 'precision_recall' not in report['plots']
    assert not (tmp_path / 'predictions.json').exists()
    assert bag_io.read_person_arrays(tmp_path / 'poses_bag') == []  # topic present, empty
    assert 'n/a (no ground truth given)' in (tmp_path / 'report.md').read_text()
