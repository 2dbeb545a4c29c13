"""RTMO (mmpose 1.3.2) in plain PyTorch: CSPDarknet + HybridEncoder + RTMO head with DCC.

Network-input contract
----------------------
``inputs``: float32 tensor (B, 3, H, W) with (W, H) = ``cfg.input_size`` (416x416 for t,
640x640 for s/m/l), **BGR** channel order, values 0..255, no mean/std normalisation. An image
gets there by ``rtmo_ros.engine.preprocess.letterbox_image``: scaled to fit and centred on a
canvas of value 114 (mmpose ``BottomupResize``).

Outputs
-------
``forward(inputs)`` -> ``HeadOutput``: raw per-level head maps (strides 16 and 32); in
training mode it also carries the keypoint-regression offsets.

``predict_network(inputs)`` -> one dict per image of numpy arrays in **network-input pixels**:
``boxes`` (n, 4) float32 xyxy, NOT clamped; ``scores`` (n,) sigmoid(cls), descending;
``keypoints`` (n, K, 2) float32 (x, y); ``keypoint_scores`` (n, K) sigmoid(visibility).
Post-process as mmpose: score > 0.1 (strict), greedy NMS suppressing IoU > 0.65 with no cap,
DCC on the unclamped boxes.

``predict(image_bgr)`` -> the same keys for one (H, W, 3) uint8 BGR image, in **image
pixels**; boxes are clamped to the network input before being mapped back (as mmpose), the
keypoints are not clamped.

Keypoint order is the dataset's (COCO-17 or CrowdPose-14, ``rtmo_ros.engine.skeleton``).
"""
import numpy as np
import torch
from torch import nn

from rtmo_ros.engine.preprocess import letterbox_image

from ..config import ModelConfig
from ..criterion import compute_losses
from .backbone import CSPDarknet
from .head import RTMOHead
from .neck import HybridEncoder

SCORE_THR = 0.1  # mmpose RTMO test_cfg score_thr
NMS_THR = 0.65   # mmpose RTMO test_cfg nms_thr


class RTMO(nn.Module):
    """The whole network; ``state_dict()`` keys equal mmpose's (minus data_preprocessor)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = CSPDarknet(cfg)
        self.neck = HybridEncoder(cfg)
        self.head = RTMOHead(cfg)

    def features(self, inputs):
        """(B, 3, H, W) network input -> [(B, C_head, H/16, W/16), (B, C_head, H/32, W/32)]."""
        return self.neck(self.backbone(inputs))

    def forward(self, inputs):
        """(B, 3, H, W) network input (see module docstring) -> ``HeadOutput``."""
        return self.head(self.features(inputs))

    def loss(self, inputs, targets, loss_cfg=None):
        """Training losses of a batch, as mmpose's ``RTMOHead.loss`` (see ``criterion``)."""
        return compute_losses(self, inputs, targets, loss_cfg)

    @torch.no_grad()
    def predict_network(self, inputs, score_thr=SCORE_THR, nms_thr=NMS_THR,
                        max_detections=None):
        """Detect poses in a batch of network inputs; see the module docstring.

        Args:
            inputs: (B, 3, H, W) float tensor, BGR 0..255 (a (3, H, W) tensor or numpy
                array is taken as a batch of one).
            score_thr: keep priors with sigmoid(cls) > score_thr.
            nms_thr: suppress boxes with IoU > nms_thr against a better kept box.
            max_detections: keep at most this many per image (None: all).

        Returns:
            list (length B) of dicts of numpy arrays, network-input pixels, unclamped boxes.
        """
        if self.training:
            raise RuntimeError('RTMO.predict_network needs eval mode: call model.eval() '
                               'first (BatchNorm statistics and the head depend on it)')
        param = next(self.parameters())
        inputs = torch.as_tensor(inputs, dtype=param.dtype, device=param.device)
        if inputs.ndim == 3:
            inputs = inputs[None]
        results = self.head.predict(self(inputs), score_thr, nms_thr, max_detections)
        return [{k: v.float().cpu().numpy() for k, v in r.items()} for r in results]

    def predict(self, image_bgr, score_thr=SCORE_THR, nms_thr=NMS_THR):
        """Detect poses in one (H, W, 3) uint8 BGR image; results in image pixels.

        Returns a dict of numpy arrays: ``boxes`` (n, 4) xyxy (clamped to the network input,
        then mapped back), ``scores`` (n,), ``keypoints`` (n, K, 2), ``keypoint_scores``
        (n, K), sorted by descending score.
        """
        net_input, box = letterbox_image(image_bgr, self.cfg.input_size)
        res = self.predict_network(net_input[None], score_thr, nms_thr)[0]
        w, h = self.cfg.input_size
        boxes = np.clip(res['boxes'], 0, [w, h, w, h])  # mmpose clamps before rescaling
        return dict(boxes=box.boxes_to_image(boxes), scores=res['scores'],
                    keypoints=box.to_image(res['keypoints']),
                    keypoint_scores=res['keypoint_scores'])

    @torch.no_grad()
    def deploy(self):
        """Fuse for inference/export, in place: BN into convs, RepVGG branches, DCC BN1d, the
        stem's space-to-depth into its conv, the FPN blocks' input convs (``FusedFPNConv``).

        Outputs stay equal up to float rounding. The fused model no longer has mmpose's
        state-dict layout and cannot be trained. Returns ``self``.
        """
        self.eval()
        # every fuse() is idempotent and works on already fused children, so order is free
        for module in list(self.modules()):
            if module is not self and hasattr(module, 'fuse'):
                module.fuse()
        return self


def build_model(cfg: ModelConfig):
    """Build a randomly initialised RTMO for ``cfg`` (train mode, as any new nn.Module)."""
    return RTMO(cfg)
