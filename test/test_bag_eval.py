"""rtmo-bag-eval end to end: offline engine runs, online replay into the real node over DDS.

The model is the bundled RTMO-tiny (320x320, fast on CPU, needs no shared fixture); these tests
check the plumbing (files, counts, stamps, latency) and that the online lock-step pass covers
every frame, giving the offline AP, while the real-time pass drops. The model's accuracy is
pinned in test_bundled_model.py; here the ground truth itself is fed in to pin the scoring.
"""
import dataclasses
import json
import shutil

import numpy as np
import pytest

from rtmo_ros import bag_eval, bag_io, bag_report, demo_bag
from rtmo_ros.bag_report import RunResult
from rtmo_ros.engine import zoo
from rtmo_ros.engine.poses import Poses

FRAMES = 6
ONLINE_FRAMES = 24
# 10x the recorded 30 Hz with one inference thread: the node cannot keep up and drops
FAST_RATE = 10.0
SLOW_NODE = ['num_threads:=1']
REPORT_KEYS = {'ap', 'ar', 'frames', 'dropped', 'latency_ms', 'mode', 'model', 'backend',
               'processed', 'topic', 'plots', 'messages', 'invalid', 'duplicate_stamps',
               'files'}
REALTIME_KEYS = {'rate', 'frames', 'processed', 'dropped', 'drop_rate', 'latency_ms', 'ap',
                 'ar', 'wall_s', 'output_fps'}


@pytest.fixture(scope='module')
def model():
    return str(zoo.bundled_path())


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    """A small raw sqlite3 demo bag (320x240) and its GT."""
    out = tmp_path_factory.mktemp('demo')
    return demo_bag.write_demo_bag(out, frames=FRAMES, seed=2, width=320, height=240,
                                   progress=False)


@pytest.fixture(scope='module')
def online(tmp_path_factory, model):
    """A 24-frame bag evaluated offline and online (real-time pass at 10x, one thread)."""
    pytest.importorskip('rclpy')
    root = tmp_path_factory.mktemp('online')
    bag, gt = demo_bag.write_demo_bag(root / 'data', frames=ONLINE_FRAMES, seed=2, width=320,
                                      height=240, progress=False)
    offline = run(bag, gt, root / 'offline', model)
    report = run(bag, gt, root / 'online', model, mode='online', rate=FAST_RATE,
                 node_params=SLOW_NODE)
    return {'bag': bag, 'gt': gt, 'offline': offline, 'report': report,
            'out': root / 'online'}


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


def test_online_replay_into_the_node(online):
    report, out = online['report'], online['out']
    assert report['mode'] == 'online' and report['frames'] == ONLINE_FRAMES
    assert REPORT_KEYS <= set(report) and REALTIME_KEYS <= set(report['realtime'])
    assert json.loads((out / 'report.json').read_text()) == report
    gt = json.loads(online['gt'].read_text())
    stamps = [im['stamp_ns'] for im in gt['images']]
    # lock-step: every frame answered, in order, none timed out
    assert (report['processed'], report['dropped'], report['timed_out']) == (ONLINE_FRAMES, 0, 0)
    lat = report['latency_ms']
    assert lat['count'] == ONLINE_FRAMES and 0 < lat['p50'] <= lat['p95'] <= lat['max'] < 60_000
    assert check_poses_bag(out, stamps)
    # real time: the node's newest-frame policy at work
    realtime = report['realtime']
    assert realtime['rate'] == FAST_RATE and realtime['frames'] == ONLINE_FRAMES
    assert realtime['processed'] + realtime['dropped'] == ONLINE_FRAMES
    assert realtime['latency_ms']['count'] == realtime['processed'] >= 1
    arrays = bag_io.read_person_arrays(out / 'poses_bag', bag_eval.REALTIME_TOPIC)
    received = [bag_io.stamp_ns(m.header) for _, m in arrays]
    assert received == sorted(received) and set(received) <= set(stamps)
    assert received[-1] == stamps[-1]  # newest-frame policy: the last frame is never dropped
    assert len(received) == realtime['processed']
    assert report['backend'] == 'onnxruntime'
    assert 'rtmo_pose' in (out / 'node.log').read_text()
    assert sorted(p.name for p in out.iterdir()) == report['files']


def test_lockstep_covers_every_frame_while_real_time_drops(online):
    """The headline AP does not depend on the machine: lock-step = offline, real time drops."""
    report, offline = online['report'], online['offline']
    assert report['realtime']['dropped'] >= 1       # the node could not keep up at 300 Hz
    assert report['timed_out'] == 0 and report['processed'] == ONLINE_FRAMES
    assert report['ap'] == pytest.approx(offline['ap'], abs=0.01)
    assert report['ap'] >= 0.5                       # the bundled model on this bag: ~0.76
    assert report['realtime']['ap'] < report['ap']   # drops are misses in real time
    predictions = json.loads((online['out'] / 'predictions.json').read_text())
    gt = json.loads(online['gt'].read_text())
    assert {p['image_id'] for p in predictions} == {im['id'] for im in gt['images']}
    realtime = json.loads((online['out'] / 'predictions_realtime.json').read_text())
    assert len({p['image_id'] for p in realtime}) <= report['realtime']['processed']
    text = (online['out'] / 'report.md').read_text()
    assert '| lock-step (every frame): frames / answered / timed out | 24 / 24 / 0 |' in text
    assert 'real time (x10): frames / processed / dropped' in text


def test_second_run_removes_the_earlier_runs_files(tmp_path, online, model):
    """An offline run without GT into an online run's folder leaves none of its files."""
    out = tmp_path / 'out'
    shutil.copytree(online['out'], out)
    (out / 'notes.txt').write_text('mine')                       # not ours: kept
    (out / '.report.json.tmp-1.json').write_text('{"half": ')   # a killed run's temp file
    report = run(online['bag'], None, out, model)
    for gone in ('node.log', 'predictions.json', 'predictions_realtime.json', 'gt.json',
                 'precision_recall.png', '.report.json.tmp-1.json'):
        assert not (out / gone).exists(), gone
    assert sorted(p.name for p in out.iterdir()) == sorted(report['files'] + ['notes.txt'])
    assert report['ap'] is None and 'realtime' not in report
    with pytest.raises(bag_io.BagError, match='poses_realtime'):  # offline: no second pass
        bag_io.read_person_arrays(out / 'poses_bag', bag_eval.REALTIME_TOPIC)


def test_report_with_a_real_time_pass(tmp_path, demo):
    """report.json's realtime entry, both prediction files and both topics of poses_bag/."""
    _, gt_path = demo
    gt = json.loads(gt_path.read_text())
    stamps = [im['stamp_ns'] for im in gt['images']]
    poses = gt_as_poses(gt)
    lockstep = RunResult(stamps=stamps, poses=poses, latency_ms=dict.fromkeys(stamps, 5.0),
                         person_arrays=[], timed_out=[])
    answered = {s: poses[s] for s in stamps[1::2]}
    realtime = RunResult(stamps=stamps, poses=answered,
                         latency_ms=dict.fromkeys(answered, 40.0), person_arrays=[])
    report = bag_report.write_report(tmp_path, lockstep, gt, {'mode': 'online', 'rate': 2.0},
                                     realtime=realtime)
    assert report['ap'] == pytest.approx(1.0) and report['timed_out'] == 0
    rt = report['realtime']
    assert (rt['rate'], rt['frames'], rt['processed'], rt['dropped']) == (2.0, FRAMES, 3, 3)
    assert rt['latency_ms']['p50'] == 40.0 and rt['ar'] < 1.0
    assert rt['predictions'] == sum(len(poses[s]) for s in answered)
    assert len(json.loads((tmp_path / 'predictions_realtime.json').read_text())) == \
        rt['predictions']
    assert bag_io.read_person_arrays(tmp_path / 'poses_bag', '/poses_realtime') == []
    text = (tmp_path / 'report.md').read_text()
    assert 'AP / AR in real time (drops are misses)' in text and '(50.0 %)' in text
    line = bag_eval.headline(report)
    assert 'every frame (lock-step): AP 1.000, 0 timed out' in line
    assert 'real time x2: 3 dropped' in line
    assert not [p for p in tmp_path.iterdir() if '.tmp-' in p.name]


def test_writes_are_atomic(tmp_path):
    """A failed write leaves the earlier file whole and no temporary file behind."""
    path = tmp_path / 'report.json'
    bag_report.write_json(path, {'a': 1})
    with pytest.raises(TypeError):
        bag_report.write_json(path, {'a': object()})
    assert json.loads(path.read_text()) == {'a': 1}
    assert [p.name for p in tmp_path.iterdir()] == ['report.json']


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


# -- bags with defects: an undecodable image, a repeated header stamp ---------------------------
DEFECT_FRAMES = 10
BAD, REPEAT = 3, 6  # message 3 cannot be decoded; message 6 carries message 5's stamp


def defective_bag(root, compressed):
    """A 10-frame demo bag rewritten with an undecodable image and a repeated stamp."""
    bag, gt = demo_bag.write_demo_bag(root / 'src', frames=DEFECT_FRAMES, seed=5, width=320,
                                      height=240, compressed=compressed, progress=False)
    reader = bag_io.open_bag(bag)
    topic = bag_io.choose_topic(reader)
    frames = list(bag_io.read_frames(reader, topic))
    reader.close()
    with bag_io.BagWriter(root / 'bag', 'sqlite3') as writer:
        for i, frame in enumerate(frames):
            msg = frame.message
            if i == BAD and compressed:
                msg = dataclasses.replace(msg, data=np.frombuffer(b'garbage' * 9, np.uint8))
            elif i == BAD:
                msg = dataclasses.replace(msg, encoding='bogus16')
            if i == REPEAT:
                msg = dataclasses.replace(msg, header=frames[REPEAT - 1].message.header)
            writer.write(topic, frame.msgtype, frame.log_ns, msg)
    return root / 'bag', gt


def check_defects(report, gt_path, out):
    gt = json.loads(gt_path.read_text())
    assert (report['messages'], report['invalid'], report['duplicate_stamps']) == (
        DEFECT_FRAMES, 1, 1)
    assert report['frames'] == DEFECT_FRAMES - 2 and report['dropped'] == 0
    assert report['processed'] == DEFECT_FRAMES - 2
    # the undecodable frame's people stay in the evaluation (a miss); the stamp that no
    # message carries any more is not on the topic
    assert (report['gt_images'], report['gt_images_not_in_bag']) == (DEFECT_FRAMES - 1, 1)
    ids = [im['id'] for im in gt['images']]
    predicted = {p['image_id'] for p in json.loads((out / 'predictions.json').read_text())}
    assert predicted <= set(ids) - {ids[BAD], ids[REPEAT]}
    assert 0.0 < report['ap'] < 1.0


@pytest.mark.parametrize('compressed', [False, True], ids=['bad_encoding', 'garbage_jpeg'])
def test_offline_skips_undecodable_frames_and_repeated_stamps(tmp_path, model, compressed):
    bag, gt = defective_bag(tmp_path, compressed)
    report = run(bag, gt, tmp_path / 'out', model)
    check_defects(report, gt, tmp_path / 'out')
    assert len(bag_io.read_person_arrays(tmp_path / 'out' / 'poses_bag')) == DEFECT_FRAMES - 2


def test_online_skips_undecodable_frames_and_repeated_stamps(tmp_path, model):
    pytest.importorskip('rclpy')
    bag, gt = defective_bag(tmp_path, compressed=True)
    offline = run(bag, gt, tmp_path / 'offline', model)
    report = run(bag, gt, tmp_path / 'out', model, mode='online')
    check_defects(report, gt, tmp_path / 'out')
    assert report['timed_out'] == 0 and report['ap'] == pytest.approx(offline['ap'], abs=0.01)
    realtime = report['realtime']
    assert realtime['frames'] == DEFECT_FRAMES - 2  # a repeated stamp is not a drop
    assert realtime['processed'] + realtime['dropped'] == DEFECT_FRAMES - 2
    assert 'skipped an image' not in (tmp_path / 'out' / 'node.log').read_text()  # not sent
