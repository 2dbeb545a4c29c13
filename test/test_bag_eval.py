"""rtmo-bag-eval end to end: offline engine runs, online replay into the real node over DDS.

The model is the bundled RTMO-tiny (320x320, fast on CPU, needs no shared fixture); these tests
check the plumbing (files, counts, stamps, latency) and that the online lock-step pass covers
every frame, giving the offline AP, IDF1 and 3D errors, while the real-time pass drops. The
model's accuracy is pinned in test_bundled_model.py; here the ground truth itself (and a
hand-made tracked run) is fed in to pin the scoring.
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
                 'ar', 'wall_s', 'output_fps', *bag_report.TRACK_KEYS, *bag_report.KPT3D_KEYS}
DEPTH = {'depth_topic': demo_bag.DEPTH_TOPIC, 'info_topic': demo_bag.INFO_TOPIC}


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
def rgbd(tmp_path_factory, model):
    """A 24-frame depth demo bag (320x240, seed 2) evaluated offline with depth."""
    root = tmp_path_factory.mktemp('rgbd')
    bag, gt = demo_bag.write_demo_bag(root / 'data', frames=ONLINE_FRAMES, seed=2, width=320,
                                      height=240, progress=False)
    offline = run(bag, gt, root / 'offline', model, **DEPTH)
    return {'bag': bag, 'gt': gt, 'offline': offline, 'out': root / 'offline'}


@pytest.fixture(scope='module')
def online(tmp_path_factory, model, rgbd):
    """The 24-frame bag evaluated online with depth (real-time pass at 10x, one thread)."""
    pytest.importorskip('rclpy')
    root = tmp_path_factory.mktemp('online')
    report = run(rgbd['bag'], rgbd['gt'], root / 'online', model, mode='online',
                 rate=FAST_RATE, node_params=SLOW_NODE, **DEPTH)
    return dict(rgbd, report=report, out=root / 'online')


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
    # the bundled model on this bag: 0.83 on the raw keypoints; the published ones are smoothed
    # (One-Euro lags walkers a little) and still must score like a usable model
    assert report['ap'] >= 0.5
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


# -- tracking and 3D -----------------------------------------------------------------------------
def test_offline_tracking_and_3d_on_the_depth_bag(rgbd):
    """The node's pipeline in-process: stable ids for the two walkers, 3D within centimetres.

    Measured here (bundled model, seed 2, 24 frames at 320x240): IDF1 1.000, 0 ID switches,
    3D median 0.067 m, p90 0.102 m, position median 0.064 m, 90 % of the GT keypoints lifted.
    """
    report, out = rgbd['offline'], rgbd['out']
    assert (report['tracking'], report['smoothing'], report['depth']) == (True, True, True)
    assert report['depth_frames'] == ONLINE_FRAMES
    assert report['idf1'] > 0.7 and report['id_switches'] <= 2 and report['gt_tracks'] == 2
    assert 0.5 < report['hota'] <= 1 and 0.5 < report['mota'] <= 1
    assert 0 < report['kpt3d_err_median_m'] < 0.15 and report['kpt3d_err_p90_m'] < 0.3
    assert 0 < report['position_err_median_m'] < 0.15
    assert report['kpt3d_valid_fraction'] > 0.6 and report['position_valid_fraction'] > 0.6
    for name in ('tracks_over_time.png', 'kpt3d_error_hist.png'):
        assert (out / name).read_bytes()[:4] == b'\x89PNG' and name in report['files']
    text = (out / 'report.md').read_text()
    assert '| IDF1 / HOTA / MOTA / ID switches |' in text and '![3D keypoint error]' in text
    assert 'on / on / on (`/camera/depth/image_raw`' in text
    # poses_bag holds what the node would publish: ids, 3D on the rays of the 2D keypoints
    arrays = bag_io.read_person_arrays(out / 'poses_bag', bag_eval.POSES_TOPIC)
    tracked = [bag_io.person_array_to_tracked(msg, 17) for _, msg in arrays]
    assert {i for t in tracked for i in t.track_ids} >= {0, 1}
    last = tracked[-1]
    people = last.track_ids >= 0
    assert np.isfinite(last.position[people]).all() and np.isfinite(last.velocity[people]).all()
    assert 'IDF1 1.000' in bag_eval.headline(dict(report, idf1=1.0)) and '3D median' in \
        bag_eval.headline(report)


def test_online_tracking_and_3d_equal_offline_in_lock_step(online):
    """Depth and camera info go out with each frame; the node's ids and 3D match in-process."""
    report, offline = online['report'], online['offline']
    assert (report['depth'], report['depth_frames']) == (True, ONLINE_FRAMES)
    assert report['realtime']['depth_frames'] == ONLINE_FRAMES
    assert report['idf1'] == pytest.approx(offline['idf1'], abs=0.02)
    assert abs(report['id_switches'] - offline['id_switches']) <= 1
    for key in ('kpt3d_err_median_m', 'kpt3d_err_p90_m', 'position_err_median_m'):
        assert report[key] == pytest.approx(offline[key], abs=0.005), key
    assert report['kpt3d_valid_fraction'] == pytest.approx(offline['kpt3d_valid_fraction'],
                                                           abs=0.02)
    realtime = report['realtime']  # drops are misses: never better than every frame
    assert realtime['idf1'] is not None and realtime['mota'] <= report['mota'] + 1e-9
    arrays = bag_io.read_person_arrays(online['out'] / 'poses_bag', bag_eval.POSES_TOPIC)
    last = bag_io.person_array_to_tracked(arrays[-1][1], 17)
    assert (last.track_ids >= 0).any() and np.isfinite(last.position[last.track_ids >= 0]).all()


def test_flags_turn_tracking_and_smoothing_off(tmp_path, demo, model):
    """--no-smoothing publishes the raw keypoints with ids; --no-tracking neither ids nor
    smoothing (n/a tracking figures); both also on the node's command line online."""
    bag, gt = demo
    runs = {name: run(bag, gt, tmp_path / name, model, **flags)
            for name, flags in (('default', {}), ('raw', {'smoothing': False}),
                                ('untracked', {'tracking': False}))}

    def published(name):
        arrays = bag_io.read_person_arrays(tmp_path / name / 'poses_bag')
        return [bag_io.person_array_to_tracked(msg, 17) for _, msg in arrays]

    default, raw, untracked = (published(name) for name in runs)
    for a, b in zip(raw, untracked):  # the same raw keypoints, ids only with tracking
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        assert (b.track_ids == -1).all()
    assert any((a.track_ids >= 0).any() for a in raw)
    assert any(np.abs(a.keypoints - b.keypoints).max() > 0.5 for a, b in zip(default, raw))
    assert runs['raw']['smoothing'] is False and runs['raw']['idf1'] is not None
    off = runs['untracked']
    assert (off['tracking'], off['smoothing'], off['idf1'], off['id_switches']) == (
        False, False, None, None)
    assert off['kpt3d_err_median_m'] is None  # no depth topics given: no 3D figures
    assert 'tracks' not in off['plots'] and 'kpt3d_error' not in off['plots']
    assert 'n/a (tracking off)' in (tmp_path / 'untracked' / 'report.md').read_text()
    assert bag_eval.switches(False, False, True) == ['tracking:=false', 'smoothing:=false',
                                                     'use_depth:=true']
    assert bag_eval.switches(True, True, False) == []


def test_node_params_and_depth_topics_are_checked(tmp_path, demo, capsys):
    settings = bag_eval.node_settings(['track_new_thr:=0.3', 'tracking:=false', 'num_threads:=1',
                                       'depth_max:=5', 'not_ours:=x'], smoothing=False, depth=True)
    assert (settings.track_new_thr, settings.tracking, settings.smoothing) == (0.3, False, False)
    assert (settings.depth_max, settings.use_depth, settings.num_threads) == (5.0, True, 1)
    assert settings.perception().depth.depth_max == 5.0
    with pytest.raises(bag_io.BagError, match='tracking takes a bool'):
        bag_eval.node_settings(['tracking:=maybe'])
    with pytest.raises(bag_io.BagError, match='depth_min'):
        bag_eval.node_settings(['depth_min:=20.0'])
    bag, _ = demo
    base = [str(bag), '--model', 'unused.onnx', '--out', str(tmp_path / 'out'), '--quiet']
    err = one_error_line(capsys, base + ['--depth-topic', demo_bag.DEPTH_TOPIC])
    assert '--camera-info-topic' in err
    err = one_error_line(capsys, base + ['--depth-topic', demo_bag.INFO_TOPIC,
                                         '--camera-info-topic', demo_bag.INFO_TOPIC])
    assert 'sensor_msgs/msg/Image' in err and '/camera/depth/image_raw (Image)' in err
    err = one_error_line(capsys, base + ['--depth-topic', '/nope', '--camera-info-topic',
                                         demo_bag.INFO_TOPIC])
    assert 'has no topic /nope' in err
    assert not (tmp_path / 'out').exists()


# A hand-made run: two people A (GT id 10, left) and B (GT id 20, right) over four frames.
# Predictions have the GT boxes; A is id 1 in frames 0-1 and id 3 in frames 2-3 (one ID
# switch), B is id 2 throughout. 3D: every GT keypoint labelled; A's predicted keypoints are
# 0.05 m off in frames 0-1 and 0.10 m in frames 2-3, B's 0.02 m with 5 of 17 unknown (NaN);
# positions 0.10 m (A) and 0.04 m (B) off.
HAND_BOXES = {10: (20.0, 20.0, 80.0, 200.0), 20: (200.0, 20.0, 260.0, 200.0)}
HAND_IDS = [{10: 1, 20: 2}, {10: 1, 20: 2}, {10: 3, 20: 2}, {10: 3, 20: 2}]


def hand_gt():
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for t in range(4):
        stamp = demo_bag.frame_stamp(t)
        images.append({'id': t + 1, 'stamp_ns': stamp, 'width': 320, 'height': 240})
        for gt_id, (x0, y0, x1, y1) in HAND_BOXES.items():
            xy = np.stack([rng.uniform(x0 + 5, x1 - 5, 17), rng.uniform(y0 + 5, y1 - 5, 17)], 1)
            kpts = np.concatenate([xy, np.full((17, 1), 2.0)], 1)
            k3 = np.column_stack([rng.uniform(-1, 1, (17, 2)), np.full(17, 2.0 + gt_id / 10)])
            annotations.append({
                'id': len(annotations) + 1, 'image_id': t + 1, 'category_id': 1, 'iscrowd': 0,
                'keypoints': kpts.reshape(-1).tolist(), 'num_keypoints': 17,
                'bbox': [x0, y0, x1 - x0, y1 - y0], 'area': (x1 - x0) * (y1 - y0),
                'track_id': gt_id, 'keypoints_3d': k3.reshape(-1).tolist(),
                'position_3d': k3[[5, 6, 11, 12]].mean(0).tolist()})
    return {'images': images, 'annotations': annotations,
            'categories': [{'id': 1, 'name': 'person', 'keypoints': [str(i) for i in range(17)],
                            'skeleton': []}]}


def hand_run(gt, frames=4):
    """RunResult of the hand-made predictions; frames from ``frames`` on have no answer."""
    from rtmo_ros.perception import Tracked

    stamps = [im['stamp_ns'] for im in gt['images']]
    poses, tracks = {}, {}
    for t, stamp in enumerate(stamps[:frames]):
        anns = [a for a in gt['annotations'] if a['image_id'] == t + 1]
        kpts = np.asarray([a['keypoints'] for a in anns], np.float32).reshape(-1, 17, 3)
        boxes = np.asarray([HAND_BOXES[a['track_id']] for a in anns], np.float32)
        poses[stamp] = Poses(boxes, np.ones(len(anns), np.float32), kpts[..., :2],
                             np.ones((len(anns), 17), np.float32))
        k3 = np.asarray([a['keypoints_3d'] for a in anns]).reshape(-1, 17, 3).copy()
        position = np.asarray([a['position_3d'] for a in anns])
        for i, a in enumerate(anns):
            if a['track_id'] == 10:
                k3[i, :, 2] += 0.05 if t < 2 else 0.10
                position[i, 2] += 0.10
            else:
                k3[i, :, 0] += 0.02
                k3[i, :5] = np.nan
                position[i, 0] += 0.04
        ids = np.asarray([HAND_IDS[t][a['track_id']] for a in anns])
        tracks[stamp] = Tracked(ids, kpts[..., :2], k3, position, np.zeros_like(position),
                                False)
    return RunResult(stamps=stamps, poses=poses, latency_ms=dict.fromkeys(poses, 1.0),
                     person_arrays=[], tracks=tracks)


def test_tracking_and_3d_figures_of_a_hand_made_run(tmp_path):
    """Every figure computed by hand; the dropped frame counts as a miss in real time.

    Every frame: IDTP = A<->1 (2 frames) + B<->2 (4) = 6 of 8 GT and 8 predicted boxes, so
    IDF1 = 2 * 6 / 16 = 0.75; MOTA = 1 - 1 switch / 8 = 0.875. 3D: 34 errors of 0.05, 34 of
    0.10, 48 of 0.02 (B's 12 known keypoints x 4): median 0.05 (the 58th/59th of 116), p90
    0.10, 116 of 136 labelled keypoints valid; positions 4 x 0.10 and 4 x 0.04: median 0.07.
    Real time without frame 3: IDTP = 2 + 3 = 5 of 8 GT and 6 predicted, IDF1 = 10 / 14;
    MOTA = 1 - (2 misses + 1 switch) / 8 = 0.625.
    """
    gt = hand_gt()
    meta = {'mode': 'online', 'rate': 1.0, 'tracking': True, 'smoothing': True, 'depth': True,
            'depth_topic': '/d', 'camera_info_topic': '/i'}
    lockstep = hand_run(gt)
    lockstep.timed_out = []
    report = bag_report.write_report(tmp_path, lockstep, gt, meta, realtime=hand_run(gt, 3))
    assert report['idf1'] == pytest.approx(0.75) and report['id_switches'] == 1
    assert report['mota'] == pytest.approx(0.875)
    assert (report['gt_tracks'], report['pred_tracks']) == (2, 3)
    assert report['kpt3d_err_median_m'] == pytest.approx(0.05)
    assert report['kpt3d_err_p90_m'] == pytest.approx(0.10)
    assert report['kpt3d_valid_fraction'] == pytest.approx(116 / 136)
    assert report['position_err_median_m'] == pytest.approx(0.07)
    assert report['position_valid_fraction'] == 1.0
    rt = report['realtime']
    assert rt['idf1'] == pytest.approx(10 / 14) and rt['id_switches'] == 1
    assert rt['mota'] == pytest.approx(0.625)
    assert rt['kpt3d_valid_fraction'] == pytest.approx((116 - 29) / 136)
    _, gt_frames = bag_report.gt_sequence(gt, {im['stamp_ns']: im['id'] for im in gt['images']})
    errors = bag_report.keypoint3d_errors(
        gt_frames, bag_report.predicted_people(lockstep, lockstep.stamps))
    assert sorted(np.round(errors, 9).tolist()) == [0.02] * 48 + [0.05] * 34 + [0.1] * 34
    assert set(report['plots']) >= {'tracks', 'kpt3d_error'}
    text = (tmp_path / 'report.md').read_text()
    assert '| IDF1 / HOTA / MOTA / ID switches (every frame, lock-step) | 0.750 / ' in text
    assert '/ 0.875 / 1 |' in text and '| 3D keypoint error median / p90 [m] (every frame, ' \
        'lock-step) | 0.050 / 0.100 |' in text
    assert 'in real time (drops are misses) | 0.714 / ' in text
    assert 'every frame (lock-step): AP 1.000, IDF1 0.750, 1 ID switch, 3D median 0.050 m' in \
        bag_eval.headline(report)
    # GT without track ids or 3D: those figures are n/a, not zero
    for ann in gt['annotations']:
        del ann['track_id'], ann['keypoints_3d'], ann['position_3d']
    bare = bag_report.write_report(tmp_path / 'bare', lockstep, gt, meta)
    assert all(bare[key] is None for key in bag_report.TRACK_KEYS + bag_report.KPT3D_KEYS)
    assert 'n/a (no track_id in the ground truth)' in (tmp_path / 'bare' / 'report.md').read_text()
    json.loads((tmp_path / 'bare' / 'report.json').read_text())  # strict JSON: no NaN
