"""PyTorch backend: runs a ``.pth`` checkpoint (mmpose or rtmo_train format) with rtmo_train.

Unlike the exported graphs, the model runs NMS at the caller's ``nms_thr`` and has no
keep-top-k cap, so results equal mmpose's ``RTMOHead.predict`` exactly.
"""
import numpy as np

from . import Backend, BackendUnavailable


def import_torch_stack():
    """Return (torch, rtmo_train.load_model) or raise BackendUnavailable with the fix."""
    try:
        import torch

        from rtmo_train import load_model
    except ImportError as err:
        raise BackendUnavailable(f'the torch backend needs torch and rtmo_train ({err}): pip '
                                 'install torch, and install this repository (rtmo_train ships '
                                 'with it)') from None
    return torch, load_model


class TorchBackend(Backend):
    """An rtmo_train ``RTMO`` model in eval mode on ``device`` ('cpu', 'cuda', 'cuda:N').

    ``precision='fp16'`` runs under CUDA autocast; on CPU the model always runs fp32.
    """

    name = 'torch'
    graph_nms_thr = None  # NMS runs at the caller's threshold

    def __init__(self, path, device=None, precision='fp16', score_thr=0.1, nms_thr=0.65,
                 num_threads=None):
        torch, load_model = import_torch_stack()
        self.torch = torch
        device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
        if device.startswith('cuda') and not torch.cuda.is_available():
            raise BackendUnavailable(f'device {device!r} requested but torch sees no CUDA '
                                     "device; use device='cpu'")
        if num_threads:
            torch.set_num_threads(int(num_threads))
        # deploy(): BatchNorm and RepVGG folded, the stem and FPN inputs fused, as in the
        # exported graphs (0.82x the time of the unfused model on a CPU)
        self.model = load_model(path, device=device).deploy()
        self.device = torch.device(device)
        self.precision = precision if self.device.type == 'cuda' else 'fp32'
        self.input_size = tuple(self.model.cfg.input_size)
        self.num_keypoints = self.model.cfg.num_keypoints
        self.score_thr, self.nms_thr = score_thr, nms_thr

    def infer(self, inputs):
        """Run the model on (B, 3, H, W) float32; return [(dets, keypoints)] per image."""
        batch = self.torch.from_numpy(np.ascontiguousarray(inputs)).to(self.device)
        with self.torch.autocast(self.device.type, dtype=self.torch.float16,
                                 enabled=self.precision == 'fp16'):
            results = self.model.predict_network(batch, self.score_thr, self.nms_thr)
        return [to_graph_layout(r) for r in results]

    def close(self):
        self.model = None
        if self.device.type == 'cuda':
            self.torch.cuda.empty_cache()


def to_graph_layout(result):
    """predict_network's dict -> (dets (N, 5), keypoints (N, K, 3)), the graphs' layout."""
    dets = np.concatenate([result['boxes'], result['scores'][:, None]], axis=1)
    kpts = np.concatenate([result['keypoints'], result['keypoint_scores'][..., None]], axis=2)
    return dets.astype(np.float32, copy=False), kpts.astype(np.float32, copy=False)
