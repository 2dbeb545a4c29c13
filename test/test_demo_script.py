"""`make demo`'s script, shortened: bundled model by default, node over DDS, report and picture."""
import json
import pathlib

import cv2
import pytest
from repo_script import load_script

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_demo():
    return load_script('scripts/demo.py')


def test_demo_runs_the_bundled_model_through_the_node(tmp_path, capsys):
    pytest.importorskip('rclpy')
    stale = ['annotated_strip.png', 'predictions_realtime.json', '.report.md.tmp-7.md']
    for name in stale:  # an earlier run's files: replaced or removed, never mixed in
        (tmp_path / name).write_text('old')
    assert load_demo().main(['--frames', '10', '--seed', '3', '--out', str(tmp_path)]) == 0
    report = json.loads((tmp_path / 'report.json').read_text())
    assert 'bundled' in report['demo_model'] and report['mode'] == 'online'
    assert report['model'].endswith('rtmo_tiny_synthetic.onnx')
    # accuracy: every frame through the node in lock-step
    assert (report['frames'], report['processed'], report['timed_out']) == (10, 10, 0)
    # real time: at the bag's 30 Hz, drops allowed
    realtime = report['realtime']
    assert realtime['rate'] == 1.0 and realtime['frames'] == 10
    assert realtime['processed'] + realtime['dropped'] == 10 and realtime['ap'] is not None
    # tracking, smoothing and depth on; figures over every frame (lock-step)
    assert (report['tracking'], report['smoothing'], report['depth']) == (True, True, True)
    assert report['depth_frames'] == 10 and report['idf1'] is not None
    assert report['kpt3d_err_median_m'] is not None and report['kpt3d_valid_fraction'] > 0
    assert {'tracks_over_time.png', 'kpt3d_error_hist.png'} <= set(report['files'])
    strip = cv2.imread(str(tmp_path / 'annotated_strip.png'))
    assert strip.shape == (240, 4 * 320, 3)
    assert (tmp_path / 'predictions.json').exists() and (tmp_path / 'poses_bag').is_dir()
    assert not (tmp_path / '.report.md.tmp-7.md').exists()
    assert set(report['files']) | {'data'} == {p.name for p in tmp_path.iterdir()}
    out = capsys.readouterr().out
    assert 'COCO AP / AR' in out and 'over all 10 frames' in out
    assert 'lock-step through the node: 0 of 10 timed out' in out
    assert 'real time      at 30 Hz:' in out and 'dropped by the node' in out
    # the machine-dependent real-time lines come after the headline, under their own label
    timing = out.index('timing on this machine')
    assert out.index('3D (depth)') < timing < out.index('real time      at')
    assert f"tracking       IDF1 {report['idf1']:.3f}, {report['id_switches']} ID switches" in out
    assert f"3D (depth)     keypoint error median {report['kpt3d_err_median_m']:.3f} m" in out


def test_strip_draws_the_track_ids_the_node_published(tmp_path):
    """annotated_strip draws the PersonArrays of poses_bag: ids at the boxes, id colours."""
    import numpy as np

    from rtmo_ros import bag_eval, bag_io, demo_bag
    from rtmo_ros.engine import zoo
    from rtmo_ros.engine.draw import person_color

    bag, gt = demo_bag.write_demo_bag(tmp_path / 'data', frames=4, seed=3, width=320,
                                      height=240, progress=False)
    out = tmp_path / 'out'
    bag_eval.evaluate_bag(bag, gt=gt, model=str(zoo.bundled_path()), backend='onnxruntime',
                          out=out, progress=False)
    strip = cv2.imread(str(load_demo().annotated_strip(bag, out)))
    reader = bag_io.open_bag(bag)
    plain = [f.decode() for f in bag_io.read_frames(reader, demo_bag.TOPIC)]
    reader.close()
    assert strip.shape == (240, 4 * 320, 3)
    arrays = bag_io.read_person_arrays(out / 'poses_bag', bag_eval.POSES_TOPIC)
    def coloured(image, track_id):  # pixels near the id's colour (lines are anti-aliased)
        return (np.abs(image.astype(int) - person_color(track_id)).max(axis=-1) <= 40).sum()

    for tile, image, (_, msg) in zip(np.hsplit(strip, 4), plain, arrays):  # 4 frames, 4 tiles
        ids = {p.track_id for p in msg.persons} - {-1}
        assert ids
        for track_id in ids:  # its box, bones and '#id' in the id's colour
            assert coloured(tile, track_id) > coloured(image, track_id) + 100, track_id
