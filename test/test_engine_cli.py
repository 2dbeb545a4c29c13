"""rtmo-pose on real files with the fixture graph, and the pure drawing function."""
import json

import cv2
import numpy as np

from rtmo_ros.engine import Poses
from rtmo_ros.engine.cli import main
from rtmo_ros.engine.draw import draw_poses, person_color
from rtmo_ros.engine.skeleton import COCO17


def test_cli_on_a_folder_writes_images_and_json(parity_dir, tmp_path):
    image = np.load(parity_dir / 'rtmo-s_coco_seed1_io.npz')['image_bgr']
    folder = tmp_path / 'in'
    folder.mkdir()
    cv2.imwrite(str(folder / 'a.png'), image)
    (folder / 'notes.txt').write_text('not an image')
    out, result = tmp_path / 'out', tmp_path / 'res' / 'poses.json'
    status = main([str(folder), '--model', str(parity_dir / 'rtmo-s_coco_seed1_mmdeploy.onnx'),
                   '--backend', 'onnxruntime', '--threads', '2', '--score-thr', '0.15',
                   '--out', str(out), '--json', str(result)])
    assert status == 0
    drawn = cv2.imread(str(out / 'a.png'))
    assert drawn.shape == image.shape and (drawn != image).any()
    doc = json.loads(result.read_text())
    assert doc['backend'] == 'onnxruntime' and len(doc['keypoint_names']) == 17
    (item,) = doc['results']
    assert item['source'].endswith('a.png') and len(item['persons']) > 0
    person = item['persons'][0]
    assert person['score'] > 0.15 and len(person['box']) == 4
    assert np.array(person['keypoints']).shape == (17, 3)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / 'missing.jpg')]) == 2
    assert main([str(tmp_path), '--model', str(tmp_path / 'none.onnx')]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and 'does not exist' in err[0] and 'none.onnx' in err[1]


def test_draw_is_pure_and_uses_person_colours():
    image = np.zeros((100, 120, 3), np.uint8)
    kpts = np.tile(np.array([[30.0, 40.0]], np.float32), (17, 1))
    kpts[5:] = [60, 70]
    poses = Poses(np.array([[10, 10, 90, 90]], np.float32), np.array([0.9], np.float32),
                  kpts[None], np.full((1, 17), 0.9, np.float32))
    out = draw_poses(image, poses, COCO17)
    assert not image.any() and out.any()
    assert np.allclose(out[10, 50], person_color(0), atol=40)  # top edge (anti-aliased)
    hidden = Poses(poses.boxes, poses.scores, poses.keypoints, np.zeros((1, 17), np.float32))
    assert not draw_poses(image, hidden, COCO17, draw_boxes=False).any()
    assert person_color(0) != person_color(1)
